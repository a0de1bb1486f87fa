//! The bulk 16-bit conversions are bit-exact with `half` on every ISA level: exhaustively for
//! 16→32 bits, and for 32→16 bits on every rounding boundary of every 16-bit value plus the
//! special f32 inputs (NaN payloads, ±∞, ±0, subnormals, overflow).

use flashkern_kernels::isa::Isa;
use flashkern_kernels::simd::convert::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use flashkern_kernels::testing::{Rng, on_every_isa};
use flashkern_kernels::{bf16, f16};

/// All 65 536 bit patterns, in an order that puts odd counts at the vector tails.
fn all_u16() -> Vec<u16> {
    (0..=u16::MAX).collect()
}

/// f32 inputs that probe 32→16 rounding: for each 16-bit pattern `h` widened to f32 bits `w`,
/// `w` itself and its neighbours around the half-way points of both 16-bit formats.
fn rounding_probes() -> Vec<f32> {
    let mut bits: Vec<u32> = Vec::new();
    for h in 0..=u16::MAX {
        let bf = u32::from(h) << 16;
        for delta in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
            bits.push(bf.wrapping_add(delta));
        }
        let f = f16::from_bits(h).to_f32().to_bits();
        for delta in [0u32, 1, 0xfff, 0x1000, 0x1001, 0x1fff] {
            bits.push(f.wrapping_add(delta));
            bits.push(f.wrapping_sub(delta));
        }
    }
    let specials = [
        0u32,
        0x8000_0000,
        1,
        0x8000_0001,
        0x007f_ffff,
        0x0080_0000,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7f80_0001,
        0x7fc0_0000,
        0xffc0_0001,
        0x7fbf_ffff,
        0x7fff_ffff,
        0x477f_f000,
        0x477f_efff,
    ];
    bits.extend(specials);
    let mut rng = Rng::new(1);
    bits.extend((0..100_000).map(|_| rng.next_u64() as u32));
    bits.into_iter().map(f32::from_bits).collect()
}

fn same_bits(got: &[u16], want: &[u16], input: impl Fn(usize) -> String) {
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        panic!("element {i}: input {} gave {:#06x}, half gives {:#06x}", input(i), got[i], want[i]);
    }
}

#[test]
fn bf16_to_f32_is_exact_for_all_inputs() {
    let src: Vec<bf16> = all_u16().into_iter().map(bf16::from_bits).collect();
    let want: Vec<u32> = src.iter().map(|x| x.to_f32().to_bits()).collect();
    on_every_isa(Isa::Avx512, |_| {
        let mut dst = vec![0f32; src.len()];
        bf16_to_f32(&src, &mut dst).unwrap();
        let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn f16_to_f32_is_exact_for_all_inputs() {
    let src: Vec<f16> = all_u16().into_iter().map(f16::from_bits).collect();
    let want: Vec<u32> = src.iter().map(|x| x.to_f32().to_bits()).collect();
    on_every_isa(Isa::Avx512, |_| {
        let mut dst = vec![0f32; src.len()];
        f16_to_f32(&src, &mut dst).unwrap();
        let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn f32_to_bf16_matches_half_on_every_boundary() {
    let src = rounding_probes();
    let want: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
    on_every_isa(Isa::Avx512, |_| {
        let mut dst = vec![bf16::ZERO; src.len()];
        f32_to_bf16(&src, &mut dst).unwrap();
        let got: Vec<u16> = dst.iter().map(|x| x.to_bits()).collect();
        same_bits(&got, &want, |i| format!("{:#010x}", src[i].to_bits()));
    });
}

#[test]
fn f32_to_f16_matches_half_on_every_boundary() {
    let src = rounding_probes();
    let want: Vec<u16> = src.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    on_every_isa(Isa::Avx512, |_| {
        let mut dst = vec![f16::ZERO; src.len()];
        f32_to_f16(&src, &mut dst).unwrap();
        let got: Vec<u16> = dst.iter().map(|x| x.to_bits()).collect();
        same_bits(&got, &want, |i| format!("{:#010x}", src[i].to_bits()));
    });
}

#[test]
fn every_length_converts_its_tail() {
    let mut rng = Rng::new(2);
    for len in 0..70 {
        let src: Vec<f32> = rng.vec(len, -10.0, 10.0);
        on_every_isa(Isa::Avx512, |_| {
            let mut dst = vec![bf16::NAN; len];
            f32_to_bf16(&src, &mut dst).unwrap();
            assert!(dst.iter().zip(&src).all(|(d, s)| *d == bf16::from_f32(*s)), "bf16, len {len}");
            let mut dst = vec![f16::NAN; len];
            f32_to_f16(&src, &mut dst).unwrap();
            assert!(dst.iter().zip(&src).all(|(d, s)| *d == f16::from_f32(*s)), "f16, len {len}");
        });
    }
}

#[test]
fn mismatched_lengths_are_an_error() {
    let mut dst = vec![bf16::ZERO; 3];
    let err = f32_to_bf16(&[1.0, 2.0], &mut dst).unwrap_err();
    assert!(err.to_string().contains("[2]") && err.to_string().contains("[3]"), "{err}");
}
