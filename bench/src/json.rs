// SPDX-License-Identifier: GPL-2.0

//! One JSON object per measurement, written by hand: flat, with string and number values.

use std::fmt::Write;

/// A JSON object under construction, its fields in insertion order.
#[derive(Clone, Default)]
pub struct Obj {
    fields: Vec<(String, String)>,
}

impl Obj {
    /// A string field.
    pub fn s(mut self, key: &str, value: &str) -> Self {
        let mut quoted = String::from("\"");
        for c in value.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(quoted, "\\u{:04x}", c as u32);
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        self.fields.push((key.into(), quoted));
        self
    }

    /// An integer field.
    pub fn n(mut self, key: &str, value: impl Into<u64>) -> Self {
        self.fields.push((key.into(), value.into().to_string()));
        self
    }

    /// A number field; `null` if it is not finite.
    pub fn f(mut self, key: &str, value: f64) -> Self {
        let v = if value.is_finite() {
            format!("{value:.3}")
        } else {
            "null".into()
        };
        self.fields.push((key.into(), v));
        self
    }

    /// A number field, `null` when absent.
    pub fn opt(self, key: &str, value: Option<f64>) -> Self {
        self.f(key, value.unwrap_or(f64::NAN))
    }

    /// The object as one line of JSON.
    pub fn render(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}
