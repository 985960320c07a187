// SPDX-License-Identifier: GPL-3.0-or-later
// imhost for Orthanc: runs any model of the imhost registry on a study or series stored in
// Orthanc, as an Orthanc job, and stores the results (Parametric Maps, Segmentations, a TID 1500
// report) as new series of the same study, so that DICOMweb viewers (OHIF) show them at once.
//
//   GET  /imhost/models        the registry (built-ins, packages and plugins of the configured folders)
//   POST /imhost/jobs          {"model", "study" | "series", "options"} -> {"ID", "Path"} (an Orthanc job)
//   GET  /imhost/jobs/{id}     the job's state, stage, progress, error and result summary
//
// Only the four entry points are exported (the version script and -fvisibility=hidden); the
// imhost core is linked statically with its symbols hidden. No exception leaves a callback: each
// entry from Orthanc catches everything, and the core's C ABI never lets a panic out.
#include "orthanc.hpp"

#include "imhost.hpp"
#ifdef IMHOST_ORTHANC_WITH_ITK
#include "imhost_itk.hpp"
#endif

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using nlohmann::json;
namespace io = imhost_orthanc;

namespace {

constexpr const char* kPluginName = "imhost";
constexpr const char* kJobType = "ImhostModel";
constexpr const char* kResearchUseOnly = "Research use only. Not for diagnostic use.";
constexpr const char* kCtImageStorage = "1.2.840.10008.5.1.4.1.1.2";

/// The "Imhost" section of Orthanc's configuration file. Folders come only from here: no REST
/// call names a path.
struct Config {
    std::vector<std::string> model_folders;
    bool standard_locations = false;
    bool isolate_plugins = true;
    unsigned concurrent_jobs = 1;
    std::string device;
    std::string uid_root;
    unsigned threads_per_job = 0;
    uint64_t memory_limit_bytes = 0;
    std::size_t max_request_bytes = 64 * 1024;
    double timeout_s = 0.0;
    struct {
        bool enable = false;
        std::string model = "perfusion-osvd";
        std::string series_description;  // ECMAScript regex, case-insensitive; empty: any
        unsigned min_instances = 20;
        json options = json::object();
    } auto_run;
};

template <class T>
T get_or(const json& section, const char* key, T fallback) {
    auto it = section.find(key);
    if (it == section.end() || it->is_null()) return fallback;
    try {
        return it->get<T>();
    } catch (const json::exception&) {
        throw std::runtime_error(std::string("configuration: \"Imhost\".\"") + key + "\" has the wrong type");
    }
}

Config parse_config(const json& full) {
    Config c;
    auto it = full.find("Imhost");
    if (it == full.end()) return c;
    const json& s = *it;
    if (!s.is_object()) throw std::runtime_error("configuration: \"Imhost\" must be an object");
    static const std::set<std::string> known = {"ModelFolders", "StandardLocations", "IsolatePlugins", "ConcurrentJobs", "Device",
                                                "UidRoot", "ThreadsPerJob", "MemoryLimitMB", "MaxRequestBytes", "TimeoutSeconds",
                                                "AutoRun"};
    for (const auto& [key, value] : s.items()) {
        (void)value;
        if (!known.count(key)) io::log_warning("configuration: unknown key \"Imhost\".\"" + key + "\" ignored");
    }
    c.model_folders = get_or<std::vector<std::string>>(s, "ModelFolders", {});
    c.standard_locations = get_or<bool>(s, "StandardLocations", false);
    c.isolate_plugins = get_or<bool>(s, "IsolatePlugins", true);
    c.concurrent_jobs = std::max(1u, get_or<unsigned>(s, "ConcurrentJobs", 1));
    c.device = get_or<std::string>(s, "Device", "");
    c.uid_root = get_or<std::string>(s, "UidRoot", "");
    c.threads_per_job = get_or<unsigned>(s, "ThreadsPerJob", 0);
    c.memory_limit_bytes = get_or<uint64_t>(s, "MemoryLimitMB", 0) * 1024 * 1024;
    c.max_request_bytes = get_or<std::size_t>(s, "MaxRequestBytes", 64 * 1024);
    c.timeout_s = get_or<double>(s, "TimeoutSeconds", 0.0);
    if (auto a = s.find("AutoRun"); a != s.end()) {
        if (!a->is_object()) throw std::runtime_error("configuration: \"Imhost\".\"AutoRun\" must be an object");
        c.auto_run.enable = get_or<bool>(*a, "Enable", false);
        c.auto_run.model = get_or<std::string>(*a, "Model", c.auto_run.model);
        c.auto_run.series_description = get_or<std::string>(*a, "SeriesDescription", "");
        c.auto_run.min_instances = get_or<unsigned>(*a, "MinInstances", c.auto_run.min_instances);
        c.auto_run.options = get_or<json>(*a, "Options", json::object());
        if (!c.auto_run.options.is_object()) throw std::runtime_error("configuration: \"AutoRun\".\"Options\" must be an object");
    }
    return c;
}

/// A counting semaphore whose wait gives up when the job is cancelled.
class Slots {
public:
    explicit Slots(unsigned n) : free_(n) {}
    bool acquire(const imhost::CancelToken& cancel) {
        std::unique_lock<std::mutex> lock(m_);
        while (free_ == 0) {
            if (cancel.cancelled()) return false;
            cv_.wait_for(lock, std::chrono::milliseconds(100));
        }
        --free_;
        return true;
    }
    void release() {
        {
            std::lock_guard<std::mutex> lock(m_);
            ++free_;
        }
        cv_.notify_one();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    unsigned free_;
};

/// What lives from Initialize to the last job: jobs hold a reference, so a job Orthanc finalizes
/// after the plugin's own Finalize still finds the registry.
struct Globals {
    Config config;
    imhost::Context context;
    std::unique_ptr<imhost::Registry> registry;
    std::unique_ptr<Slots> slots;
    std::regex auto_run_description;
};
std::shared_ptr<Globals> g_globals;
std::mutex g_globals_mutex;

std::shared_ptr<Globals> globals() {
    std::lock_guard<std::mutex> lock(g_globals_mutex);
    return g_globals;
}

void route_logs(imhost::Context& context, const std::string& prefix) {
    context.set_log_callback(
        [prefix](imhost::LogLevel level, std::string_view target, std::string_view message) {
            std::string line = prefix + std::string(target) + ": " + std::string(message);
            if (level == imhost::LogLevel::Error) io::log_error(line);
            else if (level == imhost::LogLevel::Warn) io::log_warning(line);
            else io::log_info(line);
        },
        imhost::LogLevel::Info);
}

bool is_orthanc_id(const std::string& id) {
    static const std::regex re("^[0-9a-f]{8}(-[0-9a-f]{8}){4}$");
    return std::regex_match(id, re);
}

bool is_job_id(const std::string& id) {
    static const std::regex re("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
    return std::regex_match(id, re);
}

/// What a client asked for, validated: this is also what the job serializes.
struct Request {
    std::string model;
    std::string study;                // Orthanc study id, or empty
    std::vector<std::string> series;  // Orthanc series ids in the model's input order, or empty
    json options = json::object();

    // Orthanc adds "Type" to a serialized job itself (and refuses one that has it).
    json to_json() const { return {{"Model", model}, {"Study", study}, {"Series", series}, {"Options", options}}; }

    /// Parse a request body (`{"model", "study" | "series", "options"}`) or a serialized job;
    /// throws std::invalid_argument with a message for the client.
    static Request parse(const json& body, bool serialized) {
        if (!body.is_object()) throw std::invalid_argument("the request body must be a JSON object");
        Request r;
        const char* model_key = serialized ? "Model" : "model";
        const char* study_key = serialized ? "Study" : "study";
        const char* series_key = serialized ? "Series" : "series";
        const char* options_key = serialized ? "Options" : "options";
        for (const auto& [key, value] : body.items()) {
            (void)value;
            // A serialized job also carries its outcome (see `Job::restore`).
            const bool outcome = serialized && (key == "Type" || key == "Result" || key == "Error" || key == "Stage");
            if (key != model_key && key != study_key && key != series_key && key != options_key && !outcome) {
                throw std::invalid_argument("unknown key \"" + key + "\" (allowed: model, study, series, options)");
            }
        }
        auto m = body.find(model_key);
        if (m == body.end() || !m->is_string() || m->get<std::string>().empty() || m->get<std::string>().size() > 128) {
            throw std::invalid_argument("\"model\" must be a model id (see GET /imhost/models)");
        }
        r.model = m->get<std::string>();
        if (auto s = body.find(study_key); s != body.end() && !(s->is_string() && s->get<std::string>().empty())) {
            if (!s->is_string() || !is_orthanc_id(s->get<std::string>())) throw std::invalid_argument("\"study\" must be an Orthanc study id");
            r.study = s->get<std::string>();
        }
        if (auto s = body.find(series_key); s != body.end() && !s->is_null()) {
            std::vector<std::string> ids;
            if (s->is_string()) ids.push_back(s->get<std::string>());
            else if (s->is_array() && s->size() <= 16) {
                for (const auto& e : *s) {
                    if (!e.is_string()) throw std::invalid_argument("\"series\" must be an Orthanc series id or a list of them");
                    ids.push_back(e.get<std::string>());
                }
            } else throw std::invalid_argument("\"series\" must be an Orthanc series id or a list of them");
            for (const auto& id : ids) {
                if (!is_orthanc_id(id)) throw std::invalid_argument("\"series\": \"" + id.substr(0, 64) + "\" is not an Orthanc series id");
            }
            r.series = ids;
        }
        if (r.study.empty() == r.series.empty()) throw std::invalid_argument("give either \"study\" or \"series\"");
        if (auto o = body.find(options_key); o != body.end() && !o->is_null()) {
            if (!o->is_object()) throw std::invalid_argument("\"options\" must be a JSON object");
            r.options = *o;
        }
        return r;
    }
};

struct Cancelled : std::runtime_error {
    Cancelled() : std::runtime_error("cancelled") {}
};

/// One run of a model, driven by Orthanc's job engine. The work happens on a thread of its own;
/// Step only waits for it a little, so Orthanc sees progress and a cancel within a second.
class Job {
public:
    Job(std::shared_ptr<Globals> g, Request r) : g_(std::move(g)), req_(std::move(r)) {}
    ~Job() {
        cancel_.cancel();
        join();
    }

    OrthancPluginJobStepStatus step() {
        std::unique_lock<std::mutex> lock(m_);
        if (state_ == State::Idle) {
            cancel_.reset();
            state_ = State::Running;
            error_.clear();
            result_ = json();
            std::lock_guard<std::mutex> join_lock(join_m_);
            worker_ = std::thread([this] { run(); });
        }
        done_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return state_ == State::Done; });
        // A pause (Orthanc stopping) may arrive while this step waits: the run it cancels is not a
        // failure, the job starts again when resumed.
        if (state_ != State::Done || (!ok_ && pausing_)) return OrthancPluginJobStepStatus_Continue;
        const bool ok = ok_;
        lock.unlock();
        join();
        return ok ? OrthancPluginJobStepStatus_Success : OrthancPluginJobStepStatus_Failure;
    }

    void stop(OrthancPluginJobStopReason reason) {
        if (reason == OrthancPluginJobStopReason_Success || reason == OrthancPluginJobStopReason_Failure) return;
        if (reason == OrthancPluginJobStopReason_Paused) pausing_ = true;
        cancel_.cancel();
        join();
        std::lock_guard<std::mutex> lock(m_);
        if (reason == OrthancPluginJobStopReason_Canceled) {
            stage_ = "cancelled";
            if (!ok_) error_ = "cancelled: nothing was stored";
        } else if (!ok_) {
            // Paused (e.g. Orthanc stopping): start again from the beginning when resumed.
            state_ = State::Idle;
            pausing_ = false;
            stage_ = "paused";
            progress_ = 0.0;
        }
    }

    void reset() {
        join();
        std::lock_guard<std::mutex> lock(m_);
        state_ = State::Idle;
        ok_ = false;
        stage_ = "queued";
        progress_ = 0.0;
        error_.clear();
        result_ = json();
    }

    float progress() const {
        std::lock_guard<std::mutex> lock(m_);
        return static_cast<float>(progress_);
    }

    json content() const {
        std::lock_guard<std::mutex> lock(m_);
        json c = {{"Model", req_.model}, {"Stage", stage_}, {"ResearchUseOnly", kResearchUseOnly}};
        if (!req_.study.empty()) c["Study"] = req_.study;
        if (!req_.series.empty()) c["Series"] = req_.series;
        if (!error_.empty()) c["Error"] = error_;
        if (!result_.is_null()) c["Result"] = result_;
        return c;
    }

    const Request& request() const { return req_; }

    /// What Orthanc saves of the job: the request and, once known, its outcome (so that a job
    /// that ended before Orthanc stopped still reports its results after the restart).
    json serialized() const {
        json j = req_.to_json();
        std::lock_guard<std::mutex> lock(m_);
        j["Stage"] = stage_;
        if (!error_.empty()) j["Error"] = error_;
        if (!result_.is_null()) j["Result"] = result_;
        return j;
    }

    /// Take back the outcome saved by `serialized` (a job Orthanc runs again starts afresh).
    void restore(const json& saved) {
        std::lock_guard<std::mutex> lock(m_);
        if (auto s = saved.find("Stage"); s != saved.end() && s->is_string()) stage_ = s->get<std::string>();
        if (auto e = saved.find("Error"); e != saved.end() && e->is_string()) error_ = e->get<std::string>();
        if (auto r = saved.find("Result"); r != saved.end() && r->is_object()) result_ = *r;
    }

private:
    enum class State { Idle, Running, Done };

    void join() {
        std::lock_guard<std::mutex> lock(join_m_);
        if (worker_.joinable()) worker_.join();
    }

    void set_stage(const std::string& stage, double progress) {
        std::lock_guard<std::mutex> lock(m_);
        stage_ = stage;
        progress_ = std::clamp(progress, 0.0, 0.999);
    }

    void check_cancel() const {
        if (cancel_.cancelled()) throw Cancelled();
    }

    void run() noexcept {
        bool ok = false;
        std::string error;
        json result;
        try {
            result = work();
            ok = true;
        } catch (const imhost::Error& e) {
            error = std::string(e.status_name()) + ": " + e.what();
        } catch (const std::exception& e) {
            error = e.what();
        } catch (...) {
            error = "unexpected error";
        }
        {
            std::lock_guard<std::mutex> lock(m_);
            ok_ = ok;
            error_ = error;
            result_ = std::move(result);
            state_ = State::Done;
            if (ok) {
                stage_ = "done";
                progress_ = 1.0;
            } else if (stage_ != "cancelled") {
                stage_ = "failed while " + stage_;
            }
        }
        if (!ok && error != "cancelled") io::log_error("job (" + req_.model + ") failed: " + error);
        done_cv_.notify_all();
    }

    /// The series to read, one per model input.
    std::vector<std::string> resolve_series(const json& manifest) {
        const json inputs = manifest.value("inputs", json::array());
        if (!req_.series.empty()) {
            if (req_.series.size() != inputs.size()) {
                throw std::invalid_argument("model " + req_.model + " takes " + std::to_string(inputs.size()) + " input(s), the request names " +
                                            std::to_string(req_.series.size()) + " series");
            }
            for (const auto& id : req_.series) {
                if (!io::rest_get_json("/series/" + id)) throw std::invalid_argument("series " + id + " does not exist");
            }
            return req_.series;
        }
        auto series = io::rest_get_json("/studies/" + req_.study + "/series");
        if (!series || !series->is_array()) throw std::invalid_argument("study " + req_.study + " does not exist");
        std::vector<std::string> chosen;
        for (const auto& input : inputs) {
            std::string modality = input.value("modality", "");
            if (modality == "any") modality.clear();
            std::string best;
            std::size_t best_count = 0;
            for (const auto& s : *series) {
                const std::string id = s.value("ID", "");
                if (std::find(chosen.begin(), chosen.end(), id) != chosen.end()) continue;
                const std::string m = s.contains("MainDicomTags") ? s["MainDicomTags"].value("Modality", "") : "";
                if (!modality.empty() && m != modality) continue;
                const std::size_t n = s.contains("Instances") ? s["Instances"].size() : 0;
                if (n > best_count) {
                    best = id;
                    best_count = n;
                }
            }
            if (best.empty()) {
                throw std::invalid_argument("study " + req_.study + " has no " + (modality.empty() ? std::string("image") : modality) +
                                            " series for the model's input \"" + input.value("name", "") + "\"");
            }
            chosen.push_back(best);
        }
        return chosen;
    }

    /// Every instance of a series, as Part 10 bytes.
    std::vector<io::Buffer> read_series(const std::string& series, double from, double to) {
        auto instances = io::rest_get_json("/series/" + series + "/instances");
        if (!instances || !instances->is_array() || instances->empty()) throw std::invalid_argument("series " + series + " has no instances");
        std::vector<io::Buffer> files;
        files.reserve(instances->size());
        const double n = static_cast<double>(instances->size());
        for (const auto& inst : *instances) {
            check_cancel();
            const std::string id = inst.value("ID", "");
            auto file = io::rest_get("/instances/" + id + "/file");
            if (!file) throw std::runtime_error("instance " + id + " of series " + series + " could not be read");
            files.push_back(std::move(*file));
            if (files.size() % 16 == 0) set_stage("reading the series", from + (to - from) * static_cast<double>(files.size()) / n);
        }
        return files;
    }

    json work() {
        set_stage("waiting for a free slot", 0.0);
        if (!g_->slots->acquire(cancel_)) throw Cancelled();
        struct Release {
            Slots& s;
            ~Release() { s.release(); }
        } release{*g_->slots};

        imhost::Context ctx;
        route_logs(ctx, "job " + req_.model + ": ");
        if (g_->config.threads_per_job > 0) ctx.set_threads(g_->config.threads_per_job);
        if (g_->config.memory_limit_bytes > 0) ctx.set_memory_limit(g_->config.memory_limit_bytes);

        const json manifest = json::parse(g_->registry->manifest_json(req_.model));
        set_stage("finding the series", 0.01);
        const std::vector<std::string> series = resolve_series(manifest);

        std::vector<imhost::Volume> volumes;
        for (std::size_t i = 0; i < series.size(); ++i) {
            const double span = 0.25 / static_cast<double>(series.size());
            std::vector<io::Buffer> files = read_series(series[i], 0.02 + span * static_cast<double>(i), 0.02 + span * static_cast<double>(i + 1));
            std::vector<imh_buffer> buffers;
            buffers.reserve(files.size());
            for (const auto& f : files) buffers.push_back(imh_buffer{f.data(), f.size()});
            set_stage("assembling the study", 0.02 + span * static_cast<double>(i + 1));
            volumes.push_back(ctx.read_dicom(buffers));
        }
        check_cancel();

        std::vector<imhost::View> views;
        for (const auto& v : volumes) views.push_back(v.view());
        imhost::RunOptions run;
        run.cancel = &cancel_;
        run.timeout_s = g_->config.timeout_s;
        run.progress = [this](double fraction, std::string_view stage) {
            set_stage(std::string(stage), 0.3 + 0.6 * fraction);
            return true;
        };
        set_stage("running " + req_.model, 0.3);
        imhost::ModelResult result = g_->registry->run(ctx, req_.model, views, req_.options.dump(), run);
        check_cancel();

        set_stage("writing DICOM", 0.9);
        json dicom_options = json::object();
        if (!g_->config.uid_root.empty()) dicom_options["uid_root"] = g_->config.uid_root;
        imhost::DicomResults dicom = imhost::to_dicom(ctx, result, volumes.front(), dicom_options.dump());
        const json dicom_json = json::parse(dicom.json());
        check_cancel();

        // Store everything, or nothing: a failure or a cancel on the way deletes what was stored.
        set_stage("storing the results", 0.95);
        std::vector<std::string> stored;
        std::map<std::string, std::string> series_ids;  // SeriesInstanceUID -> Orthanc id
        std::string study_id;
        try {
            for (std::size_t i = 0; i < dicom.size(); ++i) {
                check_cancel();
                auto inst = dicom[i];
                auto answer = io::rest_post_json("/instances", inst.bytes.data(), inst.bytes.size());
                if (!answer || !answer->contains("ID")) throw std::runtime_error("Orthanc refused the result " + std::string(inst.file_name));
                stored.push_back(answer->value("ID", ""));
                study_id = answer->value("ParentStudy", "");
                series_ids[dicom_json["instances"][i].value("series_instance_uid", "")] = answer->value("ParentSeries", "");
            }
            check_cancel();
        } catch (...) {
            for (const auto& id : stored) io::rest_delete("/instances/" + id);
            throw;
        }

        // One entry per new series (the CTP average is one series of one instance per slice).
        json out_series = json::array();
        std::map<std::string, std::size_t> entry_of;  // SeriesInstanceUID -> index in out_series
        for (const auto& inst : dicom_json["instances"]) {
            const std::string uid = inst.value("series_instance_uid", "");
            auto found = entry_of.find(uid);
            if (found != entry_of.end()) {
                out_series[found->second]["instances"] = out_series[found->second].value("instances", 1) + 1;
                continue;
            }
            entry_of[uid] = out_series.size();
            out_series.push_back({{"output", inst.value("output", "")},
                                  {"kind", inst.value("kind", "")},
                                  {"sop_class_uid", inst.value("sop_class_uid", "")},
                                  {"series_instance_uid", uid},
                                  {"series", series_ids[uid]},
                                  {"instances", 1}});
        }
        const json r = json::parse(result.json());
        json summary = {{"model", req_.model},
                        {"model_version", manifest.value("version", "")},
                        {"research_use_only", true},
                        {"disclaimer", kResearchUseOnly},
                        {"source_series", series},
                        {"study", study_id},
                        {"study_instance_uid", dicom_json.value("study_instance_uid", "")},
                        {"scores", r.value("scores", json::object())},
                        {"outputs", out_series},
                        {"skipped", dicom_json.value("skipped", json::array())}};
        if (r.contains("report") && r["report"].is_object()) {
            const json& report = r["report"];
            summary["qc_flags"] = report.value("qc_flags", json::array());
            summary["warnings"] = report.value("warnings", json::array());
            if (report.contains("readout")) summary["readout"] = report["readout"];
            if (report.contains("method")) summary["method"] = report["method"];
            if (report.contains("motion") && report["motion"].is_object()) {
                const json& m = report["motion"];
                double peak = 0.0;
                for (const auto& v : m.value("estimated_mm", json::array()))
                    if (v.is_number()) peak = std::max(peak, v.get<double>());
                // "backend" is null where no frame needed registering.
                const auto backend = m.find("backend");
                const auto corrected = m.find("corrected");
                summary["motion"] = {{"backend", backend != m.end() && backend->is_string() ? *backend : json(nullptr)},
                                     {"corrected", corrected != m.end() && corrected->is_boolean() && corrected->get<bool>()},
                                     {"max_estimated_mm", peak}};
            }
        }
        io::log_info("job (" + req_.model + ") stored " + std::to_string(stored.size()) + " result instance(s) in study " + study_id);
        return summary;
    }

    std::shared_ptr<Globals> g_;
    const Request req_;
    mutable std::mutex m_;
    std::condition_variable done_cv_;
    State state_ = State::Idle;
    std::atomic<bool> pausing_{false};
    bool ok_ = false;
    std::string stage_ = "queued";
    double progress_ = 0.0;
    std::string error_;
    json result_;
    imhost::CancelToken cancel_;
    std::mutex join_m_;
    std::thread worker_;
};

// --- Orthanc's job callbacks: each catches everything ----------------------------------------

Job* as_job(void* p) { return static_cast<Job*>(p); }

void job_finalize(void* job) noexcept {
    try {
        delete as_job(job);
    } catch (...) {
    }
}

float job_progress(void* job) noexcept {
    try {
        return as_job(job)->progress();
    } catch (...) {
        return 0.0f;
    }
}

const char* job_content(void* job) noexcept {
    // Orthanc copies the string at once; one buffer per calling thread keeps it valid until then.
    thread_local std::string text;
    try {
        text = as_job(job)->content().dump();
    } catch (...) {
        text = "{}";
    }
    return text.c_str();
}

const char* job_serialized(void* job) noexcept {
    thread_local std::string text;
    try {
        text = as_job(job)->serialized().dump();
    } catch (...) {
        return nullptr;
    }
    return text.c_str();
}

OrthancPluginJobStepStatus job_step(void* job) noexcept {
    try {
        return as_job(job)->step();
    } catch (...) {
        return OrthancPluginJobStepStatus_Failure;
    }
}

OrthancPluginErrorCode job_stop(void* job, OrthancPluginJobStopReason reason) noexcept {
    try {
        as_job(job)->stop(reason);
        return OrthancPluginErrorCode_Success;
    } catch (...) {
        return OrthancPluginErrorCode_Plugin;
    }
}

OrthancPluginErrorCode job_reset(void* job) noexcept {
    try {
        as_job(job)->reset();
        return OrthancPluginErrorCode_Success;
    } catch (...) {
        return OrthancPluginErrorCode_Plugin;
    }
}

OrthancPluginJob* make_orthanc_job(std::unique_ptr<Job> job) {
    OrthancPluginJob* j = OrthancPluginCreateJob(io::context(), job.get(), job_finalize, kJobType, job_progress, job_content, job_serialized,
                                                 job_step, job_stop, job_reset);
    if (j != nullptr) job.release();  // Orthanc owns it now and calls job_finalize
    return j;
}

/// Submit a job; its Orthanc id, or empty.
std::string submit(const std::shared_ptr<Globals>& g, Request request) {
    OrthancPluginJob* job = make_orthanc_job(std::make_unique<Job>(g, std::move(request)));
    if (job == nullptr) return {};
    return io::take_string(OrthancPluginSubmitJob(io::context(), job, 0));
}

OrthancPluginJob* job_unserialize(const char* type, const char* serialized) noexcept {
    try {
        if (type == nullptr || std::string(type) != kJobType || serialized == nullptr) return nullptr;
        auto g = globals();
        if (!g) return nullptr;
        const json saved = json::parse(serialized);
        Request r = Request::parse(saved, true);
        io::log_info("resuming a job of model " + r.model + " saved before Orthanc stopped");
        auto job = std::make_unique<Job>(g, std::move(r));
        job->restore(saved);
        return make_orthanc_job(std::move(job));
    } catch (...) {
        return nullptr;
    }
}

// --- REST ------------------------------------------------------------------------------------

/// Run a REST handler for `method` only; an exception becomes a 500 with its message, never
/// reaching Orthanc.
template <class Handler>
OrthancPluginErrorCode rest_route(OrthancPluginRestOutput* output, const OrthancPluginHttpRequest* request, OrthancPluginHttpMethod method,
                                  const char* allowed, Handler&& handler) noexcept {
    try {
        if (request->method != method) {
            OrthancPluginSendMethodNotAllowed(io::context(), output, allowed);
            return OrthancPluginErrorCode_Success;
        }
        auto g = globals();
        if (!g) return OrthancPluginErrorCode_Plugin;
        handler(*g, g);
        return OrthancPluginErrorCode_Success;
    } catch (const std::exception& e) {
        io::answer_error(output, 500, e.what());
        return OrthancPluginErrorCode_Success;
    } catch (...) {
        return OrthancPluginErrorCode_Plugin;
    }
}

OrthancPluginErrorCode rest_models(OrthancPluginRestOutput* output, const char*, const OrthancPluginHttpRequest* request) noexcept {
    return rest_route(output, request, OrthancPluginHttpMethod_Get, "GET", [&](Globals& g, const std::shared_ptr<Globals>&) {
        json list = json::parse(g.registry->list_json());
        list["research_use_only"] = true;
        list["disclaimer"] = kResearchUseOnly;
        io::answer_json(output, list);
    });
}

OrthancPluginErrorCode rest_jobs(OrthancPluginRestOutput* output, const char*, const OrthancPluginHttpRequest* request) noexcept {
    return rest_route(output, request, OrthancPluginHttpMethod_Post, "POST", [&](Globals& g, const std::shared_ptr<Globals>& shared) {
        if (request->bodySize > g.config.max_request_bytes) {
            io::answer_error(output, 413, "the request body has " + std::to_string(request->bodySize) + " bytes; the limit is " +
                                              std::to_string(g.config.max_request_bytes));
            return;
        }
        const char* body_text = static_cast<const char*>(request->body);
        json body = json::parse(body_text, body_text + request->bodySize, nullptr, false);
        if (body.is_discarded()) return io::answer_error(output, 400, "the request body is not JSON");
        Request r;
        try {
            r = Request::parse(body, false);
        } catch (const std::invalid_argument& e) {
            return io::answer_error(output, 400, e.what());
        }
        const std::string id = submit(shared, std::move(r));
        if (id.empty()) return io::answer_error(output, 500, "Orthanc did not accept the job");
        io::answer_json(output, {{"ID", id}, {"Path", "/jobs/" + id}, {"ImhostPath", "/imhost/jobs/" + id}});
    });
}

OrthancPluginErrorCode rest_job(OrthancPluginRestOutput* output, const char*, const OrthancPluginHttpRequest* request) noexcept {
    return rest_route(output, request, OrthancPluginHttpMethod_Get, "GET", [&](Globals&, const std::shared_ptr<Globals>&) {
        const std::string id = request->groupsCount == 1 ? request->groups[0] : "";
        if (!is_job_id(id)) return io::answer_error(output, 400, "not a job id");
        auto job = io::rest_get_json("/jobs/" + id);
        if (!job || job->value("Type", "") != kJobType) return io::answer_error(output, 404, "no imhost job " + id);
        const json content = job->value("Content", json::object());
        json out = {{"ID", id},
                    {"State", job->value("State", "")},
                    {"Progress", job->value("Progress", 0)},
                    {"Stage", content.value("Stage", "")},
                    {"Model", content.value("Model", "")},
                    {"ResearchUseOnly", kResearchUseOnly}};
        if (content.contains("Error")) out["Error"] = content["Error"];
        if (content.contains("Result")) out["Result"] = content["Result"];
        io::answer_json(output, out);
    });
}

// --- Automatic runs on stable CT series ------------------------------------------------------

void maybe_auto_run(const std::shared_ptr<Globals>& g, const std::string& series_id) {
    const auto& a = g->config.auto_run;
    auto series = io::rest_get_json("/series/" + series_id);
    if (!series) return;
    const json tags = series->value("MainDicomTags", json::object());
    if (tags.value("Modality", "") != "CT") return;
    const json instances = series->value("Instances", json::array());
    if (instances.size() < a.min_instances) return;
    if (!a.series_description.empty() && !std::regex_search(tags.value("SeriesDescription", ""), g->auto_run_description)) return;
    // Our own results are never CT Image Storage, so they never start a run.
    auto sop = io::rest_get("/instances/" + instances[0].get<std::string>() + "/metadata/SopClassUid");
    if (!sop || sop->str() != kCtImageStorage) return;
    Request r;
    r.model = a.model;
    r.series = {series_id};
    r.options = a.options;
    const std::string id = submit(g, r);
    io::log_info("automatic run of " + a.model + " on stable series " + series_id + (id.empty() ? ": not accepted" : ": job " + id));
}

OrthancPluginErrorCode on_change(OrthancPluginChangeType type, OrthancPluginResourceType resource, const char* id) noexcept {
    try {
        if (type != OrthancPluginChangeType_StableSeries || resource != OrthancPluginResourceType_Series || id == nullptr) {
            return OrthancPluginErrorCode_Success;
        }
        auto g = globals();
        if (g && g->config.auto_run.enable) maybe_auto_run(g, id);
    } catch (const std::exception& e) {
        io::log_error(std::string("automatic run: ") + e.what());
    } catch (...) {
    }
    return OrthancPluginErrorCode_Success;
}

}  // namespace

extern "C" {

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext* context) {
    io::context() = context;
    if (OrthancPluginCheckVersion(context) == 0) {
        char message[256];
        snprintf(message, sizeof message, "imhost: this Orthanc (%s) is older than the plugin SDK it was built with (%d.%d.%d)",
                 context->orthancVersion, ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER,
                 ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER);
        OrthancPluginLogError(context, message);
        return -1;
    }
    try {
        OrthancPluginSetDescription(context, "Runs imhost's imaging models (CT perfusion maps and more) as jobs; results stored as DICOM. Research use only.");
        const json full = json::parse(io::take_string(OrthancPluginGetConfiguration(context)));
        auto g = std::make_shared<Globals>();
        g->config = parse_config(full);
        if (!g->config.auto_run.series_description.empty()) {
            g->auto_run_description = std::regex(g->config.auto_run.series_description, std::regex::ECMAScript | std::regex::icase);
        }
        route_logs(g->context, "");
        imhost::RegistryOptions ro;
        ro.paths = g->config.model_folders;
        ro.standard_locations = g->config.standard_locations;
        ro.isolate_all = g->config.isolate_plugins;
        ro.device = g->config.device;
#ifdef IMHOST_ORTHANC_WITH_ITK
        // Motion correction registers moving frames with the ITK this plugin is linked to.
        ro.registration = &imhost::itk::registration_callback;
        ro.registration_name = imhost::itk::description().c_str();
        io::log_info("motion correction: " + imhost::itk::description());
#else
        io::log_warning("built without ITK: motion is estimated and flagged, not corrected");
#endif
        g->registry = std::make_unique<imhost::Registry>(g->context, ro);
        g->slots = std::make_unique<Slots>(g->config.concurrent_jobs);
        const json list = json::parse(g->registry->list_json());
        for (const auto& p : list.value("problems", json::array())) {
            io::log_warning("model folder problem: " + p.value("path", "") + ": " + p.value("message", ""));
        }
        {
            std::lock_guard<std::mutex> lock(g_globals_mutex);
            g_globals = g;
        }
        OrthancPluginRegisterRestCallbackNoLock(context, "/imhost/models", rest_models);
        OrthancPluginRegisterRestCallbackNoLock(context, "/imhost/jobs", rest_jobs);
        OrthancPluginRegisterRestCallbackNoLock(context, "/imhost/jobs/([^/]+)", rest_job);
        OrthancPluginRegisterJobsUnserializer(context, job_unserialize);
        OrthancPluginRegisterOnChangeCallback(context, on_change);
        io::log_warning("imhost " + std::string(imhost::version()) + " ready: " + std::to_string(list.value("models", json::array()).size()) +
                        " model(s), " + std::to_string(g->config.concurrent_jobs) + " concurrent job(s). " + kResearchUseOnly);
        return 0;
    } catch (const std::exception& e) {
        io::log_error(std::string("not started: ") + e.what());
        return -1;
    } catch (...) {
        io::log_error("not started: unexpected error");
        return -1;
    }
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize() {
    try {
        std::lock_guard<std::mutex> lock(g_globals_mutex);
        g_globals.reset();  // jobs still alive keep their own reference
    } catch (...) {
    }
}

ORTHANC_PLUGINS_API const char* OrthancPluginGetName() { return kPluginName; }

ORTHANC_PLUGINS_API const char* OrthancPluginGetVersion() { return IMHOST_ORTHANC_VERSION; }

}  // extern "C"
