// Ctrl-C during a long llama_decode. Python only runs its SIGINT handler when the interpreter
// gets control back, which a multi-second prefill (GIL released) does not give it. While an
// interruptible decode runs on the main thread, SigintWatch chains a C-level SIGINT handler in
// front of Python's: it sets a flag that the context's abort callback reads (the decode stops
// within one graph node), then calls Python's handler, which records the signal so that
// KeyboardInterrupt is raised as usual once the decode has returned.
#pragma once

#include <atomic>

#ifndef _WIN32
#include <csignal>
#endif

namespace pybonsai {

#ifndef _WIN32
inline std::atomic<std::atomic<bool> *> & sigint_target() {
    static std::atomic<std::atomic<bool> *> target{nullptr};
    return target;
}

inline struct sigaction & previous_sigint() {
    static struct sigaction previous {};
    return previous;
}

extern "C" inline void pybonsai_on_sigint(int sig, siginfo_t * info, void * ucontext) {
    if (std::atomic<bool> * flag = sigint_target().load()) flag->store(true);
    const struct sigaction & prev = previous_sigint();
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction) prev.sa_sigaction(sig, info, ucontext);
    } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
        prev.sa_handler(sig);
    }
}

// Installed for its lifetime when SIGINT has a handler (Python's); SIG_DFL/SIG_IGN are left alone.
class SigintWatch {
public:
    SigintWatch(std::atomic<bool> & flag, bool enabled) {
        if (!enabled) return;
        struct sigaction current {};
        if (sigaction(SIGINT, nullptr, &current) != 0) return;
        const bool handled = (current.sa_flags & SA_SIGINFO) ? current.sa_sigaction != nullptr
                                                             : current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN;
        if (!handled) return;
        previous_sigint() = current;
        sigint_target().store(&flag);
        struct sigaction mine {};
        mine.sa_sigaction = pybonsai_on_sigint;
        mine.sa_flags = SA_SIGINFO | (current.sa_flags & SA_RESTART);
        sigemptyset(&mine.sa_mask);
        active_ = sigaction(SIGINT, &mine, nullptr) == 0;
    }
    ~SigintWatch() {
        if (!active_) return;
        sigaction(SIGINT, &previous_sigint(), nullptr);
        sigint_target().store(nullptr);
    }
    SigintWatch(const SigintWatch &) = delete;
    SigintWatch & operator=(const SigintWatch &) = delete;

private:
    bool active_ = false;
};
#else
class SigintWatch {  // Windows: Ctrl-C is delivered on its own thread; not wired here
public:
    SigintWatch(std::atomic<bool> &, bool) {}
};
#endif

}  // namespace pybonsai
