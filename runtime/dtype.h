// Element types of tensors, and the bf16 storage type with its round-to-nearest-even conversion.
//
// f64 is beyond DESIGN.md's list on purpose: gradcheck runs the CPU kernels in double precision,
// so central differences measure the math, not fp32 rounding.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define BRAID_HOST_DEVICE __host__ __device__
#else
#define BRAID_HOST_DEVICE
#endif

namespace braid {

enum class DType : uint8_t { f32, f64, bf16, i32, i64, u16, u32 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
bool is_floating(DType dtype);

// bfloat16 as stored: the top 16 bits of an IEEE float.
struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  BRAID_HOST_DEVICE explicit bf16(float value) : bits(round_to_bf16(value)) {}
  BRAID_HOST_DEVICE explicit operator float() const {
    uint32_t word = uint32_t(bits) << 16;
    float value;
    memcpy(&value, &word, sizeof value);
    return value;
  }

  // Round to nearest, ties to even; NaN stays a (quiet) NaN.
  BRAID_HOST_DEVICE static uint16_t round_to_bf16(float value) {
    uint32_t word;
    memcpy(&word, &value, sizeof word);
    if ((word & 0x7f800000u) == 0x7f800000u && (word & 0x007fffffu)) return uint16_t((word >> 16) | 0x40);
    uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
    return uint16_t((word + rounding) >> 16);
  }
};

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <> struct DTypeOf<bf16> { static constexpr DType value = DType::bf16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::i64; };
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::u16; };
template <> struct DTypeOf<uint32_t> { static constexpr DType value = DType::u32; };
template <typename T> inline constexpr DType dtype_of = DTypeOf<T>::value;

}  // namespace braid
