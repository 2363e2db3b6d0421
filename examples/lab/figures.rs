//! What a probe found, and the figures it tells it with.

use std::time::Duration;

/// What a probe saw.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The trap's symptom showed.
    pub symptom: bool,
    /// What was measured, as a sentence.
    pub figure: String,
}

/// 12345678 as "12,345,678".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A size in MiB, or in KiB below one MiB.
pub fn mib(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    match bytes as f64 {
        b if b < KIB * KIB => format!("{:.1} KiB", b / KIB),
        b => format!("{:.1} MiB", b / (KIB * KIB)),
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
