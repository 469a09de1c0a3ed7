// A kernel profiler for any braid program, for machines without Nsight Systems: a CUPTI injection
// library that records every kernel, memcpy and memset the process runs and prints, at exit, where
// GPU time went (per kernel name, sorted) and how much of the wall span the GPU sat idle.
//
//   CUDA_INJECTION64_PATH=build/libkernel_profiler.so build/bench_train --steps 2 configs/models/1b/llama.json
//
// The CUDA driver loads the library named by CUDA_INJECTION64_PATH when the process creates its first
// context and calls InitializeInjection(). Records arrive in buffers CUPTI asks us for; the summary
// goes to stderr (and as JSON to $BRAID_PROFILE_JSON when set).
#include <cupti.h>

#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Interval {
  uint64_t start, end;
};

struct Totals {
  uint64_t calls = 0;
  uint64_t nanoseconds = 0;
  uint64_t bytes = 0;  // memcpy and memset only
};

std::mutex records_mutex;
std::map<std::string, Totals> kernels, transfers;
std::vector<Interval> busy;  // every record's interval, for the idle fraction
uint64_t dropped_records = 0;

void check(CUptiResult result, const char* call) {
  if (result == CUPTI_SUCCESS) return;
  const char* message = nullptr;
  cuptiGetResultString(result, &message);
  std::fprintf(stderr, "kernel_profiler: %s failed: %s\n", call, message ? message : "unknown error");
  std::exit(1);
}

// "void braid::kernels::cuda::(anonymous namespace)::foo<float, 64>(...)" -> "foo<float, 64>"
std::string short_name(const char* mangled) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  if (name.rfind("void ", 0) == 0) name.erase(0, 5);
  for (size_t at; (at = name.find("(anonymous namespace)::")) != std::string::npos;) name.erase(at, 23);
  size_t keep_from = 0;  // after the last "::" outside template arguments and before the parameters
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    else if (name[i] == '>') --depth;
    else if (depth == 0 && name[i] == '(') {
      name.resize(i);
      break;
    } else if (depth == 0 && name.compare(i, 2, "::") == 0) keep_from = i + 2;
  }
  name = name.substr(keep_from);
  return name.size() > 100 ? name.substr(0, 97) + "..." : name;
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy host->device";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy device->host";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy device->device";
    default: return "memcpy other";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBufferBytes = 8 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(records_mutex);
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* kernel = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      Totals& totals = kernels[short_name(kernel->name)];
      ++totals.calls;
      totals.nanoseconds += kernel->end - kernel->start;
      busy.push_back({kernel->start, kernel->end});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* copy = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      Totals& totals = transfers[copy_kind(copy->copyKind)];
      ++totals.calls;
      totals.nanoseconds += copy->end - copy->start;
      totals.bytes += copy->bytes;
      busy.push_back({copy->start, copy->end});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* set = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      Totals& totals = transfers["memset"];
      ++totals.calls;
      totals.nanoseconds += set->end - set->start;
      totals.bytes += set->bytes;
      busy.push_back({set->start, set->end});
    }
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(context, stream, &dropped);
  dropped_records += dropped;
  std::free(buffer);
}

// Nanoseconds during which at least one record ran, and the span from the first start to the last end.
std::pair<uint64_t, uint64_t> busy_and_span() {
  if (busy.empty()) return {0, 0};
  std::sort(busy.begin(), busy.end(), [](const Interval& a, const Interval& b) { return a.start < b.start; });
  uint64_t covered = 0, run_start = busy[0].start, run_end = busy[0].end, last_end = busy[0].end;
  for (const Interval& interval : busy) {
    if (interval.start > run_end) {
      covered += run_end - run_start;
      run_start = interval.start;
      run_end = interval.end;
    } else {
      run_end = std::max(run_end, interval.end);
    }
    last_end = std::max(last_end, interval.end);
  }
  covered += run_end - run_start;
  return {covered, last_end - busy[0].start};
}

void report() {
  check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
  std::lock_guard<std::mutex> lock(records_mutex);
  const auto [covered, span] = busy_and_span();
  uint64_t kernel_total = 0;
  for (const auto& [name, totals] : kernels) kernel_total += totals.nanoseconds;
  std::vector<std::pair<std::string, Totals>> sorted(kernels.begin(), kernels.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.nanoseconds > b.second.nanoseconds; });

  std::fprintf(stderr, "\nkernel_profiler: GPU busy %.2f ms of a %.2f ms span (%.1f%% idle), kernels %.2f ms\n",
               covered / 1e6, span / 1e6, span ? 100.0 * double(span - covered) / double(span) : 0.0,
               kernel_total / 1e6);
  std::fprintf(stderr, "%10s %8s %10s %6s  %s\n", "total ms", "calls", "avg us", "%", "kernel");
  for (const auto& [name, totals] : sorted)
    std::fprintf(stderr, "%10.2f %8llu %10.1f %6.2f  %s\n", totals.nanoseconds / 1e6,
                 static_cast<unsigned long long>(totals.calls), totals.nanoseconds / 1e3 / double(totals.calls),
                 100.0 * double(totals.nanoseconds) / double(std::max<uint64_t>(kernel_total, 1)), name.c_str());
  for (const auto& [kind, totals] : transfers)
    std::fprintf(stderr, "%10.2f %8llu %10.1f %6s  %s (%.1f MB)\n", totals.nanoseconds / 1e6,
                 static_cast<unsigned long long>(totals.calls), totals.nanoseconds / 1e3 / double(totals.calls), "",
                 kind.c_str(), totals.bytes / 1e6);
  if (dropped_records) std::fprintf(stderr, "kernel_profiler: %llu records dropped\n", static_cast<unsigned long long>(dropped_records));

  if (const char* path = std::getenv("BRAID_PROFILE_JSON")) {
    std::ofstream out(path);
    out << "{\"busy_ms\": " << covered / 1e6 << ", \"span_ms\": " << span / 1e6 << ", \"kernels\": [";
    for (size_t i = 0; i < sorted.size(); ++i)
      out << (i ? ", " : "") << "{\"name\": \"" << sorted[i].first << "\", \"calls\": " << sorted[i].second.calls
          << ", \"ms\": " << sorted[i].second.nanoseconds / 1e6 << "}";
    out << "]}\n";
  }
}

}  // namespace

extern "C" int InitializeInjection() {
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernel records");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enable memcpy records");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enable memset records");
  std::atexit(report);
  return 1;
}
