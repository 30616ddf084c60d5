//! How the demo prints: aligned rows and human-readable numbers.

use std::io::Write;
use std::time::Duration;

pub fn row(out: &mut dyn Write, label: &str, text: String) -> std::io::Result<()> {
    writeln!(out, "   {label:<12} {text}")
}

pub fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

pub fn short_hash(h: &blake3::Hash) -> String {
    let hex = h.to_hex();
    format!("{}…", &hex[..16])
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mib(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

pub fn kib(n: u64) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

pub fn mib_rate(bytes: u64, d: Duration) -> String {
    let secs = d.as_secs_f64().max(1e-9);
    mib((bytes as f64 / secs) as u64)
}

pub fn dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(mib(3 << 20), "3.0 MiB");
        assert_eq!(mib(2 << 30), "2.0 GiB");
        assert_eq!(dur(Duration::from_nanos(55)), "55 ns");
        assert_eq!(dur(Duration::from_micros(1500)), "1.5 ms");
    }
}
