// Learning-rate schedules (MODEL.md section 8): warmup-stable-decay ("trapezoid", the default) and
// cosine, both with a linear warmup.
#pragma once

#include <cstdint>
#include <string>

namespace braid {

struct ScheduleConfig {
  enum class Kind { wsd, cosine, constant };
  Kind kind = Kind::wsd;
  double peak_lr = 6e-3;
  double min_lr_ratio = 0.0;      // the floor, as a fraction of the peak
  double warmup_fraction = 0.25;  // of the total steps
  double cooldown_fraction = 0.2; // wsd: the final linear decay to the floor
};

ScheduleConfig::Kind parse_schedule_kind(const std::string& name);  // "wsd", "cosine", "constant"

// Learning rate for 0-based `step` of `total_steps`.
double learning_rate(const ScheduleConfig& config, int64_t step, int64_t total_steps);

}  // namespace braid
