#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace braid {

ScheduleConfig::Kind parse_schedule_kind(const std::string& name) {
  if (name == "wsd") return ScheduleConfig::Kind::wsd;
  if (name == "cosine") return ScheduleConfig::Kind::cosine;
  if (name == "constant") return ScheduleConfig::Kind::constant;
  BRAID_FAIL("unknown schedule '", name, "': expected wsd, cosine or constant");
}

double learning_rate(const ScheduleConfig& config, int64_t step, int64_t total_steps) {
  const double total = double(std::max<int64_t>(total_steps, 1));
  const double floor = config.peak_lr * config.min_lr_ratio;
  const double warmup = std::floor(config.warmup_fraction * total);
  const double s = double(step);
  if (s < warmup) return config.peak_lr * (s + 1) / warmup;  // reaches the peak at the warmup's end
  switch (config.kind) {
    case ScheduleConfig::Kind::constant: return config.peak_lr;
    case ScheduleConfig::Kind::wsd: {
      const double cooldown = std::floor(config.cooldown_fraction * total);
      const double cooldown_start = total - cooldown;
      if (s < cooldown_start || cooldown <= 0) return config.peak_lr;
      const double progress = (s - cooldown_start + 1) / cooldown;  // the last step reaches the floor
      return config.peak_lr + (floor - config.peak_lr) * progress;
    }
    case ScheduleConfig::Kind::cosine: {
      const double span = std::max(total - warmup - 1, 1.0);
      const double progress = std::min((s - warmup) / span, 1.0);
      return floor + 0.5 * (config.peak_lr - floor) * (1 + std::cos(M_PI * progress));
    }
  }
  return config.peak_lr;
}

}  // namespace braid
