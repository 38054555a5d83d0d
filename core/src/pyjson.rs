//! JSON text exactly as Python's `json.dumps(value, ensure_ascii=False)` writes it.
//!
//! The model saw its tool declarations (and the arguments of replayed calls) written by Python,
//! so voxloop writes them byte for byte the same way:
//!
//! - separators `", "` and `": "`, no indentation, no trailing newline;
//! - object keys in their original order (the crate enables serde_json's `preserve_order`);
//! - strings: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f` as two-character escapes, every other
//!   character below U+0020 as `\u00XX` (lower-case hex), everything else verbatim (DEL, non-ASCII,
//!   U+2028/U+2029, emoji);
//! - integers in their decimal form; floats as Python's `repr(float)`: the shortest digits that
//!   round-trip, fixed notation with at least one fractional digit (`1.0`, `0.0001`,
//!   `1000000000000000.0`) when the decimal exponent is in -4..=15, otherwise scientific notation
//!   with a sign and at least two exponent digits (`1e-07`, `1e+16`, `1.5e+300`).
//!
//! Numbers: serde_json keeps an integer as `i64`/`u64` and anything with a fraction or exponent
//! as `f64`, as Python's `json.loads` does (`1.0` stays a float and prints `1.0`, `1e2` prints
//! `100.0`). The one divergence is an integer beyond the `u64`/`i64` range: Python keeps it
//! exact, serde_json turns it into an `f64` (printed here in float form).

use serde_json::{Map, Number, Value};

/// `json.dumps(value, ensure_ascii=False)`; see the module documentation.
pub fn python_json_dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// `json.dumps(object, ensure_ascii=False)` for an object held as a map.
pub fn python_json_dumps_object(object: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_object(&mut out, object);
    out
}

/// Python's `repr(f)` for a float (`json.dumps` writes floats with it); non-finite values give
/// `NaN`, `Infinity` and `-Infinity` as `json.dumps` does.
pub fn python_float_repr(f: f64) -> String {
    let mut out = String::new();
    write_float(&mut out, f);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(object) => write_object(out, object),
    }
}

fn write_object(out: &mut String, object: &Map<String, Value>) {
    out.push('{');
    for (i, (key, item)) in object.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_string(out, key);
        out.push_str(": ");
        write_value(out, item);
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    } else {
        // Only reachable with serde_json's arbitrary_precision, which keeps the literal text.
        out.push_str(&n.to_string());
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push_str("0.0");
        return;
    }
    let sci = shortest_scientific(f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // Python's position of the decimal point relative to the digit string.
    let decpt = exponent + 1;
    let n = digits.len() as i32;
    if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
            out.push_str(".0");
        } else {
            let (int_part, frac_part) = digits.split_at(decpt as usize);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac_part);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.unsigned_abs()));
    }
}

/// The shortest round-tripping digits of a finite `f > 0` in the form `d[.ddd]e[-]x`, chosen
/// as Python's repr chooses them.
///
/// Rust's `{:e}` finds the shortest digit count, but when two strings of that length both
/// round-trip and lie equally far from the exact binary value (e.g. 978791022324113.25 →
/// `…113.2` or `…113.3`), it may pick either; Python picks the one closest to the exact value,
/// ties to an even last digit, which is what `{:.N$e}` (exact, round-half-even) gives at that
/// length. That string is used when it round-trips (it always does except, at worst, next to a
/// power of two where the rounding interval is lopsided).
fn shortest_scientific(f: f64) -> String {
    let shortest = format!("{f:e}");
    let mantissa = shortest.split_once('e').map_or(shortest.as_str(), |(m, _)| m);
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let nearest = format!("{:.*e}", digits.saturating_sub(1), f);
    if nearest.parse::<f64>().is_ok_and(|back| back == f) {
        nearest
    } else {
        shortest
    }
}
