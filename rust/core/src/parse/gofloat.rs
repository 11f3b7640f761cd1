//! Numbers as the Prometheus text format writes them: Go's `strconv.ParseFloat`
//! for values and `strconv.ParseInt(s, 10, 64)` for timestamps.
//!
//! Accepted floats: `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`,
//! and, case-insensitively, `[+-]? (inf | infinity)` and unsigned `nan`. Go's
//! hex floats and `_` separators are refused, as Prometheus' own parsers do, and
//! so is a finite literal too large for an f64 (Go reports ErrRange).

/// Exact powers of ten: every 10^i for i ≤ 22 is representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest integer below which every u64 is exactly an f64.
const MAX_EXACT_INT: u64 = 1 << 53;

/// Parses a Go float literal; `None` when it is not one.
pub(crate) fn parse_f64(b: &[u8]) -> Option<f64> {
    let (negative, body) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    match body.first()? {
        b'0'..=b'9' | b'.' => {}
        b'i' | b'I' => {
            return if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
                Some(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else {
                None
            };
        }
        // Go's special() only takes NaN without a sign.
        b'n' | b'N' if body.len() == b.len() && body.eq_ignore_ascii_case(b"nan") => {
            return Some(f64::NAN);
        }
        _ => return None,
    }

    // One pass: validate the grammar and gather up to 19 significant digits.
    let mut i = 0;
    let mut mantissa: u64 = 0;
    let mut sig_digits = 0u32; // digits folded into `mantissa`, leading zeros excluded
    let mut dropped = false; // a non-zero digit did not fit into `mantissa`
    let mut exp10: i64 = 0;
    let mut any_digit = false;
    while let Some(&c) = body.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        any_digit = true;
        fold_digit(
            c,
            &mut mantissa,
            &mut sig_digits,
            &mut dropped,
            &mut exp10,
            false,
        );
        i += 1;
    }
    if body.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = body.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            any_digit = true;
            fold_digit(
                c,
                &mut mantissa,
                &mut sig_digits,
                &mut dropped,
                &mut exp10,
                true,
            );
            i += 1;
        }
    }
    if !any_digit {
        return None;
    }
    if let Some(b'e' | b'E') = body.get(i) {
        i += 1;
        let exp_negative = match body.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i64 = 0;
        while let Some(&c) = body.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            // Saturate: anything this large is 0 or out of range anyway.
            e = (e * 10 + i64::from(c - b'0')).min(1_000_000);
            i += 1;
        }
        if i == start {
            return None;
        }
        exp10 += if exp_negative { -e } else { e };
    }
    if i != body.len() {
        return None;
    }

    let magnitude = if mantissa == 0 && !dropped {
        0.0
    } else if !dropped && mantissa <= MAX_EXACT_INT && (-22..=22).contains(&exp10) {
        // Clinger's fast path: both operands exact, so one IEEE operation rounds correctly.
        let m = mantissa as f64;
        if exp10 >= 0 {
            m * POW10[exp10 as usize]
        } else {
            m / POW10[(-exp10) as usize]
        }
    } else {
        // The grammar above is a subset of what std accepts, and std rounds correctly.
        let digits = std::str::from_utf8(body).ok()?;
        let v: f64 = digits.parse().ok()?;
        if v.is_infinite() {
            return None; // Go: ErrRange
        }
        v
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[inline(always)]
fn fold_digit(
    c: u8,
    mantissa: &mut u64,
    sig_digits: &mut u32,
    dropped: &mut bool,
    exp10: &mut i64,
    fraction: bool,
) {
    let d = u64::from(c - b'0');
    if *sig_digits < 19 {
        if *sig_digits > 0 || d != 0 {
            *mantissa = *mantissa * 10 + d;
            *sig_digits += 1;
        }
        if fraction {
            *exp10 -= 1;
        }
    } else {
        // Too many digits for the fast path; std will redo the work exactly.
        *dropped |= d != 0;
        if !fraction {
            *exp10 += 1;
        }
    }
}

/// Parses a base-10 i64 with an optional sign, as Go's `ParseInt(s, 10, 64)`.
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulate towards the sign so that i64::MIN parses.
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    #[test]
    fn go_float_syntax_is_accepted() {
        let cases: &[(&str, f64)] = &[
            ("4.710169", 4.710169),
            ("1.253376e+07", 1.253376e7),
            ("1e-05", 1e-5),
            (".5", 0.5),
            ("5.", 5.0),
            ("-0", -0.0),
            ("+0", 0.0),
            ("0", 0.0),
            ("00012", 12.0),
            ("1E3", 1000.0),
            ("+1.5", 1.5),
            ("-2.5e-3", -2.5e-3),
            ("1.6243962483020916e+09", 1.6243962483020916e9),
            ("5123.770120991", 5123.770120991),
            ("357841.104220332", 357841.104220332),
            ("6.891237376e+09", 6.891237376e9),
            ("1e308", 1e308),
            ("1e-400", 0.0),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("0.000000000000000000000000000001", 1e-30),
            ("9007199254740993", 9007199254740992.0),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("-infinity", f64::NEG_INFINITY),
            ("NaN", f64::NAN),
            ("nan", f64::NAN),
        ];
        for &(s, want) in cases {
            let got = parse_f64(s.as_bytes());
            assert!(
                got.is_some_and(|g| same(g, want)),
                "{s}: got {got:?}, want {want}"
            );
        }
    }

    #[test]
    fn non_go_floats_are_refused() {
        for s in [
            "", "+", "-", ".", "e5", "1e", "1e+", "1.2.3", "1..2", "0x1p-2", "0x10", "1_000",
            "1p3", "+NaN", "-nan", "infin", "Inf1", "1e400", "-1e400", " 1", "1 ", "1,5", "١",
            "NaNx", "--1", "+-1",
        ] {
            assert_eq!(
                parse_f64(s.as_bytes()).map(f64::to_bits),
                None,
                "{s:?} should be refused"
            );
        }
    }

    #[test]
    fn fast_path_agrees_with_std() {
        // Deterministic sweep over mantissas and exponents on both sides of the fast path.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = x % 10_000_000_000_000_000;
            let exp = (x >> 54) as i64 % 40 - 20;
            for s in [
                format!("{digits}e{exp}"),
                format!("0.{digits}"),
                format!("{digits}.5"),
            ] {
                let want: f64 = s.parse().unwrap();
                assert!(same(parse_f64(s.as_bytes()).unwrap(), want), "{s}");
            }
        }
    }

    #[test]
    fn integers_parse_like_go_parseint() {
        assert_eq!(parse_i64(b"1633253812125"), Some(1_633_253_812_125));
        assert_eq!(parse_i64(b"-1633253812125"), Some(-1_633_253_812_125));
        assert_eq!(parse_i64(b"+7"), Some(7));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for s in [
            "",
            "-",
            "+",
            "9223372036854775808",
            "1.5",
            "1e3",
            "12a",
            " 1",
            "--1",
        ] {
            assert_eq!(parse_i64(s.as_bytes()), None, "{s:?}");
        }
    }
}
