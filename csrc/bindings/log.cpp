// llama.cpp / ggml log routing: warnings and errors are kept so that exceptions can quote them;
// everything is echoed to stderr only when verbose.
#include "core.h"

#include "llama.h"

#include <atomic>
#include <cstdio>
#ifdef _WIN32
#include <io.h>
#define PYBONSAI_DUP _dup
#define PYBONSAI_DUP2 _dup2
#define PYBONSAI_CLOSE _close
#define PYBONSAI_FILENO _fileno
#else
#include <unistd.h>
#define PYBONSAI_DUP dup
#define PYBONSAI_DUP2 dup2
#define PYBONSAI_CLOSE close
#define PYBONSAI_FILENO fileno
#endif
#include <deque>
#include <mutex>

namespace pybonsai {
namespace {

std::mutex g_mutex;
std::deque<std::string> g_lines;  // recent warnings/errors
std::string g_partial;            // a message still being continued (GGML_LOG_LEVEL_CONT)
ggml_log_level g_partial_level = GGML_LOG_LEVEL_NONE;
std::atomic<bool> g_verbose{false};
constexpr size_t kMaxLines = 16;

bool worth_keeping(ggml_log_level level) {
    return level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR;
}

void on_log(ggml_log_level level, const char * text, void *) {
    if (!text) return;
    if (g_verbose.load(std::memory_order_relaxed)) {
        std::fputs(text, stderr);
        std::fflush(stderr);
    }
    std::lock_guard<std::mutex> lock(g_mutex);
    if (level != GGML_LOG_LEVEL_CONT) {
        g_partial.clear();
        g_partial_level = level;
    }
    if (!worth_keeping(g_partial_level)) return;
    g_partial += text;
    if (!g_partial.empty() && g_partial.back() == '\n') {
        g_partial.pop_back();
        g_lines.push_back(std::move(g_partial));
        g_partial.clear();
        if (g_lines.size() > kMaxLines) g_lines.pop_front();
    }
}

}  // namespace

std::string take_log() {
    std::lock_guard<std::mutex> lock(g_mutex);
    std::string out;
    for (auto & line : g_lines) {
        if (!out.empty()) out += "\n";
        out += line;
    }
    g_lines.clear();
    return out;
}

// Bytes that are not valid UTF-8 (llama.cpp logs names read from the file, such as tensor names)
// become U+FFFD: Python must be able to turn the exception message into a str.
static std::string valid_utf8(const std::string & s) {
    auto in = [&](size_t i, unsigned lo, unsigned hi) {
        return i < s.size() && (unsigned char) s[i] >= lo && (unsigned char) s[i] <= hi;
    };
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = s[i];
        size_t len = 0;
        if (c < 0x80) len = 1;
        else if (c >= 0xC2 && c <= 0xDF && in(i + 1, 0x80, 0xBF)) len = 2;
        else if (c >= 0xE0 && c <= 0xEF && in(i + 1, c == 0xE0 ? 0xA0 : 0x80, c == 0xED ? 0x9F : 0xBF) &&
                 in(i + 2, 0x80, 0xBF)) len = 3;
        else if (c >= 0xF0 && c <= 0xF4 && in(i + 1, c == 0xF0 ? 0x90 : 0x80, c == 0xF4 ? 0x8F : 0xBF) &&
                 in(i + 2, 0x80, 0xBF) && in(i + 3, 0x80, 0xBF)) len = 4;
        if (len == 0) {
            out += "\xEF\xBF\xBD";
            i += 1;
        } else {
            out.append(s, i, len);
            i += len;
        }
    }
    return out;
}

std::string with_log(const std::string & message) {
    std::string log = take_log();
    return valid_utf8(log.empty() ? message : message + "\nllama.cpp said:\n" + log);
}

std::string capture_stderr(const std::function<void()> & fn) {
    static std::mutex capture_mutex;  // one redirection at a time
    std::lock_guard<std::mutex> lock(capture_mutex);
    std::FILE * tmp = std::tmpfile();
    int saved = tmp ? PYBONSAI_DUP(2) : -1;
    if (saved < 0) {  // cannot redirect: run without capturing
        if (tmp) std::fclose(tmp);
        fn();
        return {};
    }
    std::fflush(stderr);
    PYBONSAI_DUP2(PYBONSAI_FILENO(tmp), 2);
    auto restore = [&] {
        std::fflush(stderr);
        PYBONSAI_DUP2(saved, 2);
        PYBONSAI_CLOSE(saved);
    };
    try {
        fn();
    } catch (...) {
        restore();
        std::fclose(tmp);
        throw;
    }
    restore();
    std::string out;
    std::rewind(tmp);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0 && out.size() < (1u << 20)) out.append(buf, n);
    std::fclose(tmp);
    if (g_verbose.load(std::memory_order_relaxed) && !out.empty()) std::fputs(out.c_str(), stderr);
    return out;
}

void init_log(py::module_ & m) {
    llama_log_set(on_log, nullptr);
    m.def("set_verbose", [](bool on) { g_verbose = on; }, py::arg("on"),
          "Echo llama.cpp's log to stderr (off by default).");
    m.def("take_log", &take_log, "Warnings and errors llama.cpp logged since the last call.");
}

}  // namespace pybonsai
