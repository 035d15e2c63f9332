// llama.cpp / ggml log routing: warnings and errors are kept so that exceptions can quote them;
// everything is echoed to stderr only when verbose.
#include "core.h"

#include "llama.h"

#include <atomic>
#include <cstdio>
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

std::string with_log(const std::string & message) {
    std::string log = take_log();
    return log.empty() ? message : message + "\nllama.cpp said:\n" + log;
}

void init_log(py::module_ & m) {
    llama_log_set(on_log, nullptr);
    m.def("set_verbose", [](bool on) { g_verbose = on; }, py::arg("on"),
          "Echo llama.cpp's log to stderr (off by default).");
    m.def("take_log", &take_log, "Warnings and errors llama.cpp logged since the last call.");
}

}  // namespace pybonsai
