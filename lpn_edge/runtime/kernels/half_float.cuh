// Scalar helpers shared by the kernels' headers: the host/device qualifier macro and exact float / fp16 bit
// conversions. No standard headers (NVRTC).

#ifndef LPN_HALF_FLOAT_CUH
#define LPN_HALF_FLOAT_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define LPN_HD __host__ __device__ __forceinline__
#else
#define LPN_HD inline
#endif

LPN_HD float lpn_bits_to_float(unsigned int bits) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float value;
    __builtin_memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

LPN_HD float lpn_neg_inf() { return lpn_bits_to_float(0xff800000u); }

// IEEE binary16 bits -> float (exact; the device uses the hardware conversion, the host the bit layout).
LPN_HD float lpn_half_to_float(unsigned short half) {
#ifdef __CUDA_ARCH__
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(half));
    return value;
#else
    unsigned int sign = (unsigned int)(half >> 15) << 31;
    unsigned int exponent = (half >> 10) & 0x1fu;
    unsigned int mantissa = half & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return lpn_bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf / nan
    return lpn_bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

#endif  // LPN_HALF_FLOAT_CUH
