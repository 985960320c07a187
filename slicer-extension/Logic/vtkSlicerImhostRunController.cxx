// The run controller (see the header).
#include "vtkSlicerImhostRunController.h"

#include <algorithm>
#include <exception>

#include <vtkOutputWindow.h>

namespace imhost_slicer {

RunController::RunController() {
    context_.set_log_callback(
        [this](imhost::LogLevel level, std::string_view target, std::string_view message) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (log_.size() < 10000) log_.push_back({static_cast<imh_log_level>(level), std::string(target), std::string(message)});
        },
        imhost::LogLevel::Info);
}

RunController::~RunController() {
    Cancel();
    Join();
    context_.set_log_callback(nullptr);
}

bool RunController::Start(Work work) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (state_ == State::Running) return false;
    }
    Join();  // a finished worker not yet joined
    cancel_.reset();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        state_ = State::Running;
        taken_ = false;
        message_.clear();
        fraction_ = 0.0;
        stage_ = "starting";
        started_ = std::chrono::steady_clock::now();
    }
    worker_ = std::thread([this, work = std::move(work)]() {
        imhost::RunOptions options;
        options.cancel = &cancel_;
        options.progress = [this](double fraction, std::string_view stage) {
            std::lock_guard<std::mutex> lock(mutex_);
            fraction_ = fraction;
            stage_ = std::string(stage);
            return true;
        };
        State end = State::Succeeded;
        std::string message;
        try {
            work(context_, options);
        } catch (const imhost::Error& e) {
            end = e.status() == IMH_STATUS_CANCELLED ? State::Cancelled : State::Failed;
            message = e.what();
        } catch (const std::exception& e) {
            end = State::Failed;
            message = e.what();
        } catch (...) {
            end = State::Failed;
            message = "unknown failure";
        }
        if (end != State::Cancelled && cancel_.cancelled()) end = State::Cancelled, message = "cancelled";
        std::lock_guard<std::mutex> lock(mutex_);
        state_ = end;
        message_ = message;
        if (end == State::Succeeded) fraction_ = 1.0, stage_ = "done";
    });
    return true;
}

void RunController::Cancel() {
    if (cancel_.c()) cancel_.cancel();
}

void RunController::Join() {
    if (worker_.joinable()) worker_.join();
}

RunController::State RunController::state() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return state_;
}

RunController::State RunController::Take(std::string* message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::Running || state_ == State::Idle || taken_) return State::Idle;
    taken_ = true;
    if (message) *message = message_;
    return state_;
}

double RunController::fraction() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return fraction_;
}

std::string RunController::stage() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stage_;
}

double RunController::elapsed_s() const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::Idle) return 0.0;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

double RunController::seconds_left() const {
    const double f = fraction(), t = elapsed_s();
    if (!(f > 0.02) || f >= 1.0) return -1.0;
    return t * (1.0 - f) / f;
}

std::vector<LogRecord> RunController::DrainLog() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<LogRecord> out;
    out.swap(log_);
    return out;
}

int RunController::Process(bool discard, const std::function<void()>& apply, std::string& status) {
    std::string message;
    const State s = Take(&message);
    if (s == State::Idle) return state() == State::Running ? OutcomeRunning : OutcomeIdle;
    Join();
    if (s == State::Succeeded && !discard) {
        try {
            apply();
            return OutcomeSucceeded;
        } catch (const std::exception& e) {
            status = std::string("could not add the results: ") + e.what();
            return OutcomeFailed;
        }
    }
    if (s == State::Cancelled || discard) {
        status = "cancelled: nothing was added";
        return OutcomeCancelled;
    }
    status = message;
    return OutcomeFailed;
}

int RunController::WaitFor(const std::function<int()>& process) {
    for (;;) {
        const int outcome = process();
        if (outcome != OutcomeRunning) return outcome;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::vector<std::string> RunController::ForwardLog() {
    static const char* const names[] = {"", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
    std::vector<std::string> lines;
    for (const LogRecord& r : DrainLog()) {
        const std::string line = std::string(names[std::min<unsigned>(r.level, 5)]) + " " + r.target + ": " + r.message;
        const std::string text = "imhost: " + line + "\n";
        if (r.level == IMH_LOG_ERROR) vtkOutputWindow::GetInstance()->DisplayErrorText(text.c_str());
        else if (r.level == IMH_LOG_WARN) vtkOutputWindow::GetInstance()->DisplayWarningText(text.c_str());
        else vtkOutputWindow::GetInstance()->DisplayDebugText(text.c_str());
        lines.push_back(line);
    }
    return lines;
}

}  // namespace imhost_slicer
