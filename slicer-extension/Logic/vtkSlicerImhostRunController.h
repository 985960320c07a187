// The Qt-free controller of one long run: the work goes to a worker thread (it calls the C ABI
// and never touches MRML), progress and the library's log records come back through a mutex,
// and the main thread polls (a QTimer in the module widget, a loop in tests) and applies the
// result there. Cancel reaches the library's cancel token at once; the library checks it at
// least once per frame or slice. Research use only.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "imhost.hpp"
#include "vtkSlicerImhostModuleLogicExport.h"

namespace imhost_slicer {

/// One log record of the library, as the context's log callback received it.
struct LogRecord {
    imh_log_level level;
    std::string target;
    std::string message;
};

class VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT RunController {
public:
    enum class State { Idle, Running, Succeeded, Failed, Cancelled };
    /// The work: runs on the worker thread with the run's progress/cancel options; throws
    /// imhost::Error (or any std::exception) on failure.
    using Work = std::function<void(const imhost::Context&, const imhost::RunOptions&)>;

    RunController();
    ~RunController();  ///< cancels and joins a run still going
    RunController(const RunController&) = delete;
    RunController& operator=(const RunController&) = delete;

    /// The library context (log records routed into this controller; thread count, memory).
    const imhost::Context& context() const { return context_; }

    /// Start `work` on the worker thread; false when a run is still going.
    bool Start(Work work);
    /// Ask the run to stop (returns at once; the state becomes Cancelled when it has).
    void Cancel();
    /// Wait for the worker to end (tests; the GUI polls instead).
    void Join();

    /// What the logics' ProcessRun() return (their RunState enums have these values).
    enum Outcome { OutcomeIdle = 0, OutcomeRunning, OutcomeSucceeded, OutcomeFailed, OutcomeCancelled };
    /// Main thread, periodically: while running, OutcomeRunning; once the run has ended, join it
    /// and, for a success not to be `discard`ed, call `apply` (which adds the nodes; an exception
    /// there is a failure) — then the outcome, once, with its status line in `status`.
    int Process(bool discard, const std::function<void()>& apply, std::string& status);
    /// Call `process` every 20 ms until it returns something other than OutcomeRunning.
    static int WaitFor(const std::function<int()>& process);

    /// Main thread: the current state; Succeeded/Failed/Cancelled are reported once by Take().
    State state() const;
    /// Main thread: when the run has ended, the final state (and its message) — once; Idle while
    /// running or when nothing is to be taken.
    State Take(std::string* message);

    double fraction() const;
    std::string stage() const;
    double elapsed_s() const;
    /// Estimated seconds left (from the elapsed time and the fraction done); < 0 when unknown.
    double seconds_left() const;
    /// Log records received since the last call (main thread drains them into Slicer's log).
    std::vector<LogRecord> DrainLog();
    /// Main thread: send the records received since the last call to VTK's output window
    /// (Slicer's log: errors, warnings, the rest as debug text) and return them as lines
    /// "LEVEL target: message".
    std::vector<std::string> ForwardLog();

private:
    static void LogTrampoline(void* user, imh_log_level level, const char* target, const char* message);

    imhost::Context context_;
    imhost::CancelToken cancel_;
    std::thread worker_;
    mutable std::mutex mutex_;
    State state_ = State::Idle;
    bool taken_ = true;
    std::string message_;
    double fraction_ = 0.0;
    std::string stage_;
    std::chrono::steady_clock::time_point started_{};
    std::vector<LogRecord> log_;
};

}  // namespace imhost_slicer
