// imhost — C++17 helper for writing model plugins (header-only, over include/imhost_plugin.h).
//
//   struct MyModel : imhost::plugin::Model {
//       void run(imhost::plugin::Run &run) override { ... }   // throw on failure
//   };
//   static const imhp_model MODELS[] = {imhost::plugin::model<MyModel>(MANIFEST_JSON)};
//   IMHOST_PLUGIN("my-plugin", "1.0.0", MODELS)
//
// Exceptions never cross into the host: every entry point catches them and reports the
// message through imhp_host.set_error (imhost::plugin::Error carries a status). Research use
// only.
#ifndef IMHOST_PLUGIN_HPP
#define IMHOST_PLUGIN_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "imhost_plugin.h"

namespace imhost {
namespace plugin {

/// A failure with its plugin status (IMHP_ERROR unless said otherwise).
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string &message, imhp_status status = IMHP_ERROR)
        : std::runtime_error(message), status_(status) {}
    imhp_status status() const noexcept { return status_; }

  private:
    imhp_status status_;
};

template <class T> struct DTypeOf;
template <> struct DTypeOf<std::uint8_t> { static constexpr imhp_dtype value = IMHP_DTYPE_U8; };
template <> struct DTypeOf<std::int16_t> { static constexpr imhp_dtype value = IMHP_DTYPE_I16; };
template <> struct DTypeOf<std::uint16_t> { static constexpr imhp_dtype value = IMHP_DTYPE_U16; };
template <> struct DTypeOf<std::int32_t> { static constexpr imhp_dtype value = IMHP_DTYPE_I32; };
template <> struct DTypeOf<float> { static constexpr imhp_dtype value = IMHP_DTYPE_F32; };
template <> struct DTypeOf<double> { static constexpr imhp_dtype value = IMHP_DTYPE_F64; };

/// The manifest's name of a pixel type (`IMHP_DTYPE_F32` -> "f32").
inline const char *dtype_name(imhp_dtype dtype) {
    switch (dtype) {
    case IMHP_DTYPE_U8: return "u8";
    case IMHP_DTYPE_I16: return "i16";
    case IMHP_DTYPE_U16: return "u16";
    case IMHP_DTYPE_I32: return "i32";
    case IMHP_DTYPE_F32: return "f32";
    case IMHP_DTYPE_F64: return "f64";
    default: return "an unknown type";
    }
}

/// Typed access to a tensor through its strides: `t(i, j, k)` or `t(i, j, k, frame)`.
template <class T> class Tensor {
  public:
    explicit Tensor(const imhp_tensor &t) : t_(t) {
        if (t.dtype != DTypeOf<T>::value)
            throw Error(std::string("input '") + (t.name ? t.name : "?") + "' is " + dtype_name(t.dtype) +
                            ", but the model reads it as " + dtype_name(DTypeOf<T>::value) +
                            " (list the types you read in the manifest's \"dtypes\": the host converts to the first)",
                        IMHP_INVALID_INPUT);
    }
    T &operator()(std::size_t i, std::size_t j, std::size_t k, std::size_t f = 0) const {
        std::ptrdiff_t off = static_cast<std::ptrdiff_t>(i) * t_.strides[0] + static_cast<std::ptrdiff_t>(j) * t_.strides[1] +
                             static_cast<std::ptrdiff_t>(k) * t_.strides[2] + static_cast<std::ptrdiff_t>(f) * t_.strides[3];
        return static_cast<T *>(t_.data)[off];
    }
    std::size_t size(int axis) const { return t_.shape[axis]; }
    const imhp_tensor &raw() const { return t_; }

  private:
    imhp_tensor t_;
};

/// One run: inputs, options, outputs and the host's callbacks.
class Run {
  public:
    explicit Run(const imhp_run_args *args) : args_(args), host_(args->host) {}

    const imhp_tensor &input(std::size_t n) const {
        if (n >= args_->n_inputs) throw Error("no input " + std::to_string(n), IMHP_INVALID_INPUT);
        return *args_->inputs[n];
    }
    /// A number or integer option (the host has filled in defaults and checked the type and
    /// range); a boolean reads as 1 or 0.
    double number(const std::string &name) const {
        if (IMHP_HOST_HAS(host_, option_number)) {
            double value = 0;
            if (host_->option_number(host_->ctx, name.c_str(), &value) != IMHP_OK)
                throw Error("the manifest declares no number option " + name, IMHP_INVALID_INPUT);
            return value;
        }
        // A host older than ABI 1.2: its options JSON is compact ("name":value).
        std::string json = args_->options_json ? args_->options_json : "";
        std::string key = "\"" + name + "\":";
        std::size_t at = json.find(key);
        if (at == std::string::npos) throw Error("option " + name + " missing", IMHP_INVALID_INPUT);
        if (json.compare(at + key.size(), 4, "true") == 0) return 1;
        return std::strtod(json.c_str() + at + key.size(), nullptr);
    }
    bool boolean(const std::string &name) const { return number(name) != 0; }
    /// A string option (ABI 1.2 hosts).
    std::string string(const std::string &name) const {
        if (!IMHP_HOST_HAS(host_, option_string)) throw Error("string options need an imhost of ABI 1.2 or later");
        std::size_t length = 0;
        host_->option_string(host_->ctx, name.c_str(), nullptr, 0, &length);
        std::string value(length + 1, '\0');
        if (host_->option_string(host_->ctx, name.c_str(), &value[0], value.size(), &length) != IMHP_OK)
            throw Error("the manifest declares no string option " + name, IMHP_INVALID_INPUT);
        value.resize(length);
        return value;
    }
    /// The folder the plugin was loaded from (its weights and data lie there); empty on hosts
    /// older than ABI 1.2.
    std::string plugin_dir() const {
        return IMHP_HOST_HAS(host_, plugin_dir) ? std::string(host_->plugin_dir) : std::string();
    }
    /// Allocate a host-owned, zeroed output declared in the manifest.
    template <class T> Tensor<T> output(const char *name, std::array<std::size_t, 4> shape) const {
        imhp_tensor t{};
        imhp_status s = host_->alloc_output(host_->ctx, name, DTypeOf<T>::value, shape.data(), &t);
        if (s != IMHP_OK) throw Error(std::string("the host refused output ") + name, s);
        return Tensor<T>(t);
    }
    void score(const char *name, double value) const {
        if (host_->set_score(host_->ctx, name, value) != IMHP_OK) throw Error(std::string("the host refused score ") + name);
    }
    /// Report progress; throws a cancellation when the user stopped the run.
    void progress(double fraction, const char *stage) const {
        if (host_->progress && !host_->progress(host_->ctx, fraction, stage)) throw Error("cancelled", IMHP_CANCELLED);
    }
    void log(imhp_log_level level, const std::string &message) const {
        if (host_->log) host_->log(host_->ctx, level, message.c_str());
    }

  private:
    const imhp_run_args *args_;
    const imhp_host *host_;
};

/// Base class of a model: one instance per load; run() is never called concurrently.
class Model {
  public:
    virtual ~Model() = default;
    virtual void run(Run &run) = 0;
};

namespace detail {
inline imhp_status report(const imhp_host *host, const char *message, imhp_status status) noexcept {
    if (host && host->set_error) host->set_error(host->ctx, message);
    return status;
}

template <class M> struct Entry {
    static imhp_status create(const imhp_host *host, void **instance) noexcept {
        try {
            *instance = new M();
            return IMHP_OK;
        } catch (const std::exception &e) {
            return report(host, e.what(), IMHP_ERROR);
        } catch (...) {
            return report(host, "unknown C++ exception in create", IMHP_ERROR);
        }
    }
    static imhp_status run(void *instance, const imhp_run_args *args) noexcept {
        const imhp_host *host = args ? args->host : nullptr;
        try {
            Run r(args);
            static_cast<M *>(instance)->run(r);
            return IMHP_OK;
        } catch (const Error &e) {
            return report(host, e.what(), e.status());
        } catch (const std::bad_alloc &) {
            return report(host, "out of memory", IMHP_NO_MEMORY);
        } catch (const std::exception &e) {
            return report(host, e.what(), IMHP_ERROR);
        } catch (...) {
            return report(host, "unknown C++ exception in run", IMHP_ERROR);
        }
    }
    static void destroy(void *instance) noexcept { delete static_cast<M *>(instance); }
};
}  // namespace detail

/// The descriptor entry of model type `M` (default-constructible) with its manifest JSON.
template <class M> imhp_model model(const char *manifest_json) {
    return imhp_model{sizeof(imhp_model), 0, manifest_json, &detail::Entry<M>::create, &detail::Entry<M>::run,
                      &detail::Entry<M>::destroy};
}

}  // namespace plugin
}  // namespace imhost

/// Define the plugin's entry point for a static array of models.
#define IMHOST_PLUGIN(NAME, VERSION, MODELS)                                                                  \
    extern "C" IMHP_EXPORT const imhp_plugin *imhost_plugin_entry(const imhp_host *host) {                    \
        (void)host;                                                                                           \
        static const imhp_plugin plugin = {sizeof(imhp_plugin), IMHP_ABI_MAJOR, IMHP_ABI_MINOR, sizeof(imhp_model), \
                                           NAME, VERSION, sizeof(MODELS) / sizeof((MODELS)[0]), MODELS, nullptr}; \
        return &plugin;                                                                                       \
    }

#endif
