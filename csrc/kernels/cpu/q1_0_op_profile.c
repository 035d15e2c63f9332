// pybonsai: per-op time sums for PYBONSAI_OP_PROFILE=1 (see q1_0_op_profile.h).
#include "q1_0_op_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int64_t count, compute_ns, wait_ns;
} q1k_profile_sum;

static q1k_profile_sum g_sums[Q1K_PROFILE_THREADS][Q1K_PROFILE_SLOTS];
static const char *    g_names[Q1K_PROFILE_SLOTS];

static void q1k_profile_print(void) {
    static int printed = 0;  // atexit handlers run one after another
    if (printed) {
        return;
    }
    printed = 1;
    for (int s = 0; s < Q1K_PROFILE_SLOTS; s++) {
        for (int t = 0; t < Q1K_PROFILE_THREADS; t++) {
            const q1k_profile_sum * p = &g_sums[t][s];
            if (p->count > 0) {
                fprintf(stderr, "pybonsai-op-profile %s thread %d count %lld compute_ns %lld wait_ns %lld\n",
                        g_names[s] ? g_names[s] : "?", t, (long long) p->count, (long long) p->compute_ns,
                        (long long) p->wait_ns);
            }
        }
    }
}

static int q1k_profile_read_env(void) {
    const char * v = getenv("PYBONSAI_OP_PROFILE");
    if (v == NULL || v[0] == '\0' || strcmp(v, "0") == 0) {
        return 0;
    }
    atexit(q1k_profile_print);
    return 1;
}

int q1k_profile_on(void) {
    // -1: not read yet. Threads racing on the first call read the same environment; one atexit
    // registration or two both print once (q1k_profile_print).
    static int state = -1;
    if (state < 0) {
        state = q1k_profile_read_env();
    }
    return state;
}

int64_t q1k_profile_now(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void q1k_profile_add(int ith, int slot, const char * name, int64_t t0, int64_t t1, int64_t t2) {
    if (ith < 0 || ith >= Q1K_PROFILE_THREADS || slot < 0 || slot >= Q1K_PROFILE_SLOTS) {
        return;
    }
    q1k_profile_sum * p = &g_sums[ith][slot];
    g_names[slot]       = name;
    p->count += 1;
    p->compute_ns += t1 - t0;
    p->wait_ns += t2 - t1;
}
