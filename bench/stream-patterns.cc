// What sets the rate a stream of weights is read at on this machine, outside Node.js and onnxruntime (issue 13, round 6):
// 4 KiB pages (MADV_NOHUGEPAGE) or 2 MiB ones (MADV_HUGEPAGE), 1 or 2 threads, the buffer split into 64 KiB chunks
// taken in turn (as the addon's streamProbe) or in two halves (as onnxruntime splits a GEMV's columns), a software
// prefetch 4 KiB ahead or none, one vpdpbusd (int8) or one float FMA per 64 bytes, over 64 MiB (mostly the last-level
// cache here) and 512 MiB (memory). Each case: two warm-up passes, then a timed mean of 40 (64 MiB) or 8 (512 MiB)
// passes, in `rounds` rounds over every case in turn; best, median and worst reported as JSON lines.
//   g++ -O3 -pthread -o /tmp/stream-patterns bench/stream-patterns.cc && /tmp/stream-patterns 5
#include <immintrin.h>
#include <sys/mman.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <algorithm>
#include <string>
#include <fstream>

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t streamDp(const uint8_t* p, size_t n, int pf) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    if (pf) { _mm_prefetch((const char*)p + i + pf, _MM_HINT_T0); _mm_prefetch((const char*)p + i + pf + 64, _MM_HINT_T0); _mm_prefetch((const char*)p + i + pf + 128, _MM_HINT_T0); _mm_prefetch((const char*)p + i + pf + 192, _MM_HINT_T0); }
    s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(p + i), ones);
    s1 = _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(p + i + 64), ones);
    s2 = _mm512_dpbusd_epi32(s2, _mm512_loadu_si512(p + i + 128), ones);
    s3 = _mm512_dpbusd_epi32(s3, _mm512_loadu_si512(p + i + 192), ones);
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3)));
}

// float FMA stream like a GEMV (x broadcast chunk): 16 floats per load
__attribute__((target("avx512f"))) int32_t streamFma(const uint8_t* pb, size_t n, int pf) {
  const float* p = (const float*)pb; size_t m = n / 4;
  __m512 x = _mm512_set1_ps(1.0f);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 64 <= m; i += 64) {
    if (pf) { for (int k = 0; k < 4; k++) _mm_prefetch((const char*)(p + i) + pf + 64 * k, _MM_HINT_T0); }
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), x, s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 16), x, s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 32), x, s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 48), x, s3);
  }
  return (int32_t)_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

long anonHuge() {
  std::ifstream f("/proc/self/smaps_rollup"); std::string line; long kb = -1;
  while (std::getline(f, line)) if (line.rfind("AnonHugePages:", 0) == 0) kb = atol(line.c_str() + 14);
  return kb;
}


struct Cfg { bool huge; int threads; bool halves; int pf; size_t mib; const char* kind; };
int main(int argc, char** argv) {
  int rounds = atoi(argv[1]);
  size_t n = (size_t)512 << 20;
  uint8_t* buf[2];
  for (int h = 0; h < 2; h++) {
    void* raw; if (posix_memalign(&raw, 2 << 20, n)) return 1;
    madvise(raw, n, h ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    buf[h] = (uint8_t*)raw; for (size_t i = 0; i < n; i += 4096) memset(buf[h] + i, 1, 4096);
  }
  fprintf(stderr, "anonHugeKiB %ld\n", anonHuge());
  std::vector<Cfg> cfgs;
  for (size_t mib : {64, 512}) for (int h = 0; h < 2; h++) for (int pf : {0, 4096}) {
    cfgs.push_back({(bool)h, 1, false, pf, mib, "dp"});
    cfgs.push_back({(bool)h, 2, false, pf, mib, "dp"});
    cfgs.push_back({(bool)h, 2, true, pf, mib, "dp"});
  }
  for (int h = 0; h < 2; h++) { cfgs.push_back({(bool)h, 1, false, 0, 512, "fma"}); cfgs.push_back({(bool)h, 2, true, 0, 512, "fma"}); }
  std::vector<std::vector<double>> res(cfgs.size());
  std::atomic<int> sink{0};
  for (int r = 0; r < rounds; r++) for (size_t c = 0; c < cfgs.size(); c++) {
    const Cfg& g = cfgs[c]; uint8_t* p = buf[g.huge]; size_t len = g.mib << 20; int pf = g.pf;
    auto fn = std::string(g.kind) == "fma" ? streamFma : streamDp;
    auto pass = [&]() {
      if (g.threads == 1) { sink += fn(p, len, pf); return; }
      if (g.halves) { std::thread t([&] { sink += fn(p + len / 2, len / 2, pf); }); sink += fn(p, len / 2, pf); t.join(); }
      else { std::atomic<size_t> next{0}; size_t chunk = 65536;
        auto work = [&] { for (;;) { size_t o = next.fetch_add(chunk); if (o >= len) break; sink += fn(p + o, std::min(chunk, len - o), pf); } };
        std::thread t(work); work(); t.join(); }
    };
    int runs = g.mib == 64 ? 40 : 8;
    for (int i = 0; i < 2; i++) pass();
    double t0 = now(); for (int i = 0; i < runs; i++) pass(); double t = (now() - t0) / runs;
    res[c].push_back(len / t / 1e9);
  }
  for (size_t c = 0; c < cfgs.size(); c++) {
    auto v = res[c]; std::sort(v.begin(), v.end());
    const Cfg& g = cfgs[c];
    printf("{\"mib\":%zu,\"pages\":\"%s\",\"threads\":%d,\"split\":\"%s\",\"prefetch\":%d,\"kind\":\"%s\",\"maxGBs\":%.2f,\"medianGBs\":%.2f,\"minGBs\":%.2f}\n", g.mib, g.huge ? "2M" : "4K", g.threads, g.threads == 1 ? "-" : g.halves ? "halves" : "chunks64K", g.pf, g.kind, v.back(), v[v.size()/2], v.front());
  }
  return sink.load() == 42;
}
