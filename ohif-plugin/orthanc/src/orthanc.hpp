// SPDX-License-Identifier: GPL-3.0-or-later
// A thin RAII layer over Orthanc's C plugin SDK (orthanc-dev ships no C++ wrapper): owned
// buffers and strings, the REST calls the plugin makes into its own Orthanc, logging.
#ifndef IMHOST_ORTHANC_HPP
#define IMHOST_ORTHANC_HPP

#include <orthanc/OrthancCPlugin.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace imhost_orthanc {

/// The Orthanc context, set once in OrthancPluginInitialize.
inline OrthancPluginContext*& context() {
    static OrthancPluginContext* ctx = nullptr;
    return ctx;
}

inline void log_info(const std::string& m) { OrthancPluginLogInfo(context(), ("imhost: " + m).c_str()); }
inline void log_warning(const std::string& m) { OrthancPluginLogWarning(context(), ("imhost: " + m).c_str()); }
inline void log_error(const std::string& m) { OrthancPluginLogError(context(), ("imhost: " + m).c_str()); }

/// An OrthancPluginMemoryBuffer freed on destruction.
class Buffer {
public:
    Buffer() = default;
    ~Buffer() { clear(); }
    Buffer(Buffer&& o) noexcept : b_(std::exchange(o.b_, OrthancPluginMemoryBuffer{})) {}
    Buffer& operator=(Buffer&& o) noexcept {
        if (this != &o) {
            clear();
            b_ = std::exchange(o.b_, OrthancPluginMemoryBuffer{});
        }
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    OrthancPluginMemoryBuffer* out() {
        clear();
        return &b_;
    }
    const uint8_t* data() const { return static_cast<const uint8_t*>(b_.data); }
    std::size_t size() const { return b_.size; }
    std::string str() const { return b_.data ? std::string(static_cast<const char*>(b_.data), b_.size) : std::string(); }
    void clear() {
        if (b_.data != nullptr) OrthancPluginFreeMemoryBuffer(context(), &b_);
        b_ = OrthancPluginMemoryBuffer{};
    }

private:
    OrthancPluginMemoryBuffer b_{};
};

/// A string allocated by Orthanc, copied out and freed.
inline std::string take_string(char* s) {
    if (s == nullptr) return {};
    std::string out(s);
    OrthancPluginFreeString(context(), s);
    return out;
}

/// GET `uri` on Orthanc's own REST API (with the other plugins, e.g. DICOMweb). Empty when it
/// fails (404 included).
inline std::optional<Buffer> rest_get(const std::string& uri) {
    Buffer b;
    if (OrthancPluginRestApiGet(context(), b.out(), uri.c_str()) != OrthancPluginErrorCode_Success) return std::nullopt;
    return b;
}

/// GET `uri` and parse it as JSON; empty when the call or the parse fails.
inline std::optional<nlohmann::json> rest_get_json(const std::string& uri) {
    auto b = rest_get(uri);
    if (!b) return std::nullopt;
    auto j = nlohmann::json::parse(b->str(), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

/// POST `body` to `uri`; the answer parsed as JSON, empty on failure.
inline std::optional<nlohmann::json> rest_post_json(const std::string& uri, const void* body, std::size_t size) {
    Buffer b;
    if (OrthancPluginRestApiPost(context(), b.out(), uri.c_str(), body, static_cast<uint32_t>(size)) != OrthancPluginErrorCode_Success) {
        return std::nullopt;
    }
    auto j = nlohmann::json::parse(b.str(), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

inline bool rest_delete(const std::string& uri) { return OrthancPluginRestApiDelete(context(), uri.c_str()) == OrthancPluginErrorCode_Success; }

/// Answer a REST call with JSON and a status code (200 through AnswerBuffer, others with a
/// body through SendHttpStatus).
inline void answer_json(OrthancPluginRestOutput* output, const nlohmann::json& body, uint16_t status = 200) {
    const std::string text = body.dump(2);
    if (status == 200) {
        OrthancPluginAnswerBuffer(context(), output, text.data(), static_cast<uint32_t>(text.size()), "application/json");
    } else {
        OrthancPluginSetHttpHeader(context(), output, "Content-Type", "application/json");
        OrthancPluginSendHttpStatus(context(), output, status, text.data(), static_cast<uint32_t>(text.size()));
    }
}

inline void answer_error(OrthancPluginRestOutput* output, uint16_t status, const std::string& message) {
    answer_json(output, {{"error", message}, {"status", status}}, status);
}

}  // namespace imhost_orthanc

#endif  // IMHOST_ORTHANC_HPP
