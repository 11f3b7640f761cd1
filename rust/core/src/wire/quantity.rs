//! Canonical text forms the API must reproduce byte for byte: Kubernetes
//! `resource.Quantity` strings, Go `time.Duration` strings and RFC 3339
//! timestamps in whole seconds.
//!
//! Quantity rules (apimachinery `Quantity.CanonicalizeBytes`):
//! - DecimalSI: drop trailing decimal zeros into the exponent, then lower the
//!   exponent to a multiple of 3 and pick its SI suffix (`n u m "" k M G T P E`).
//! - BinarySI (memory): values with |v| < 1024 are written as DecimalSI
//!   (`1000` → `1k`, `512` → `512`); others drop factors of 1024 into the
//!   exponent (`2048` → `2Ki`, `1536` → `1536`).

/// Appends the canonical DecimalSI form of `nanocores` × 10⁻⁹.
pub fn write_cpu(out: &mut Vec<u8>, nanocores: u64) {
    write_decimal_si(out, nanocores, -9);
}

/// Appends the canonical BinarySI form of `bytes`.
pub fn write_memory(out: &mut Vec<u8>, bytes: u64) {
    if bytes < 1024 {
        // Upstream switches to DecimalSI below 1024 "to avoid rounding".
        write_decimal_si(out, bytes, 0);
        return;
    }
    let mut mantissa = bytes;
    let mut power = 0usize;
    while mantissa % 1024 == 0 && power < BINARY_SUFFIXES.len() - 1 {
        mantissa /= 1024;
        power += 1;
    }
    write_u64(out, mantissa);
    out.extend_from_slice(BINARY_SUFFIXES[power].as_bytes());
}

const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// DecimalSI of `value × 10^scale`, as `int64Amount.AsCanonicalBytes` does.
fn write_decimal_si(out: &mut Vec<u8>, value: u64, scale: i32) {
    if value == 0 {
        out.push(b'0');
        return;
    }
    // u128 so that scaling the mantissa back up by ≤100 can never overflow.
    let mut mantissa = u128::from(value);
    let mut exponent = scale;
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    let down = exponent.rem_euclid(3);
    mantissa *= 10u128.pow(down as u32);
    exponent -= down;
    write_u128(out, mantissa);
    match decimal_suffix(exponent) {
        Some(suffix) => out.extend_from_slice(suffix.as_bytes()),
        None => {
            // Outside the SI table upstream writes a decimal exponent.
            out.push(b'e');
            out.extend_from_slice(exponent.to_string().as_bytes());
        }
    }
}

fn decimal_suffix(exponent: i32) -> Option<&'static str> {
    Some(match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => return None,
    })
}

pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_u128(out: &mut Vec<u8>, v: u128) {
    match u64::try_from(v) {
        Ok(small) => write_u64(out, small),
        Err(_) => out.extend_from_slice(v.to_string().as_bytes()),
    }
}

/// Appends Go's `time.Duration(ns).String()`: `0s`, `1.5ms`, `15.012s`,
/// `1m0.5s`, `2h0m0s`.
pub fn write_duration_ns(out: &mut Vec<u8>, ns: i64) {
    if ns < 0 {
        out.push(b'-');
    }
    let u = ns.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    if u < SECOND {
        if u == 0 {
            out.extend_from_slice(b"0s");
            return;
        }
        let (prec, unit): (u32, &str) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        write_fraction(out, u, prec);
        out.extend_from_slice(unit.as_bytes());
        return;
    }
    let total_seconds = u / SECOND;
    let frac = u % SECOND;
    let hours = total_seconds / 3600;
    let minutes = (total_seconds / 60) % 60;
    let seconds = total_seconds % 60;
    if hours > 0 {
        write_u64(out, hours);
        out.push(b'h');
    }
    if total_seconds >= 60 {
        write_u64(out, minutes);
        out.push(b'm');
    }
    write_u64(out, seconds);
    write_frac_digits(out, frac, 9);
    out.push(b's');
}

/// `v / 10^prec` with the fraction's trailing zeros (and a bare point) dropped.
fn write_fraction(out: &mut Vec<u8>, v: u64, prec: u32) {
    let div = 10u64.pow(prec);
    write_u64(out, v / div);
    write_frac_digits(out, v % div, prec);
}

fn write_frac_digits(out: &mut Vec<u8>, frac: u64, prec: u32) {
    if frac == 0 || prec == 0 {
        return;
    }
    let mut digits = [0u8; 9];
    let mut f = frac;
    for slot in digits[..prec as usize].iter_mut().rev() {
        *slot = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut end = prec as usize;
    while end > 0 && digits[end - 1] == b'0' {
        end -= 1;
    }
    out.push(b'.');
    out.extend_from_slice(&digits[..end]);
}

/// Appends `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC, what `metav1.Time`
/// marshals: RFC 3339 without fractional seconds).
pub fn write_rfc3339(out: &mut Vec<u8>, unix_seconds: i64) {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if (0..10_000).contains(&year) {
        push_padded(out, year as u64, 4);
    } else {
        out.extend_from_slice(year.to_string().as_bytes());
    }
    out.push(b'-');
    push_padded(out, u64::from(month), 2);
    out.push(b'-');
    push_padded(out, u64::from(day), 2);
    out.push(b'T');
    push_padded(out, (secs / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, ((secs / 60) % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (secs % 60) as u64, 2);
    out.push(b'Z');
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let digits = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
    for _ in digits..width {
        out.push(b'0');
    }
    write_u64(out, v);
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix milliseconds → whole Unix seconds, rounding toward the past like
/// Go's `Time.Unix()`.
pub fn ms_to_seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Milliseconds → nanoseconds, saturating instead of overflowing.
pub fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

fn to_string(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(24);
    f(&mut out);
    // Every writer above emits ASCII or the UTF-8 'µ'.
    String::from_utf8(out).unwrap_or_default()
}

pub fn format_cpu(nanocores: u64) -> String {
    to_string(|o| write_cpu(o, nanocores))
}

pub fn format_memory(bytes: u64) -> String {
    to_string(|o| write_memory(o, bytes))
}

pub fn format_duration_ms(ms: i64) -> String {
    to_string(|o| write_duration_ns(o, ms_to_ns(ms)))
}

pub fn format_rfc3339(unix_seconds: i64) -> String {
    to_string(|o| write_rfc3339(o, unix_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_matches_upstream_canonical_forms() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1n"),
            (123_456_789, "123456789n"),
            (20_000, "20u"),
            (1_500_000, "1500u"),
            (500_000_000, "500m"),
            (1_000_000_000, "1"),
            (1_500_000_000, "1500m"),
            (10_000_000_000, "10"),
            (100_000_000_000, "100"),
            (1_000_000_000_000, "1k"),
            (1_000_000, "1m"),
            (10_000_000, "10m"),
            (100, "100n"),
            (1_000, "1u"),
            (12_340_000, "12340u"),
            (u64::MAX, "18446744073709551615n"),
        ];
        for (v, want) in cases {
            assert_eq!(format_cpu(*v), *want, "cpu {v}");
        }
    }

    #[test]
    fn memory_matches_upstream_canonical_forms() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1"),
            (512, "512"),
            (1000, "1k"),
            (100, "100"),
            (1023, "1023"),
            (1024, "1Ki"),
            (1536, "1536"),
            (2000, "2000"),
            (2048, "2Ki"),
            (12_533_760, "12240Ki"),
            (3 * 1024 * 1024, "3Mi"),
            (1_234_567, "1234567"),
            (1 << 30, "1Gi"),
            (5 << 40, "5Ti"),
            (1 << 60, "1Ei"),
            (1 << 63, "8Ei"),
        ];
        for (v, want) in cases {
            assert_eq!(format_memory(*v), *want, "memory {v}");
        }
    }

    #[test]
    fn durations_match_go() {
        let ms: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ms"),
            (999, "999ms"),
            (1000, "1s"),
            (10_000, "10s"),
            (15_012, "15.012s"),
            (60_000, "1m0s"),
            (60_500, "1m0.5s"),
            (3_600_000, "1h0m0s"),
            (3_661_001, "1h1m1.001s"),
            (-1500, "-1.5s"),
        ];
        for (v, want) in ms {
            assert_eq!(format_duration_ms(*v), *want, "ms {v}");
        }
        let ns: &[(i64, &str)] = &[
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (1_000_000_001, "1.000000001s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (v, want) in ns {
            let mut out = Vec::new();
            write_duration_ns(&mut out, *v);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "ns {v}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_735_032_833), "2024-12-24T09:33:53Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(ms_to_seconds(1_735_032_833_501), 1_735_032_833);
        assert_eq!(ms_to_seconds(-1), -1);
    }
}
