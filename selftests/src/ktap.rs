// SPDX-License-Identifier: GPL-2.0

//! A minimal KTAP runner: one `ok N name` / `not ok N name` line per test, diagnostics as `#`
//! lines, and a closing `N passed, N failed` line.

use std::{
    panic::{
        self,
        AssertUnwindSafe, //
    },
    time::Instant,
};

/// Why a test did not pass.
#[derive(Debug)]
pub enum Outcome {
    /// It failed: the message says what was expected and what was seen.
    Fail(String),
    /// It could not run here (missing hardware or kernel feature): the message says what.
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<(), Outcome>;

impl From<String> for Outcome {
    fn from(msg: String) -> Self {
        Outcome::Fail(msg)
    }
}

impl From<&str> for Outcome {
    fn from(msg: &str) -> Self {
        Outcome::Fail(msg.to_string())
    }
}

impl From<std::io::Error> for Outcome {
    fn from(err: std::io::Error) -> Self {
        Outcome::Fail(format!("unexpected error: {err}"))
    }
}

/// One test.
pub struct Test {
    /// Its name, as printed.
    pub name: &'static str,
    /// Its body.
    pub run: fn() -> TestResult,
}

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::ktap::Outcome::Fail(format!(
                "{}:{}: {}", file!(), line!(), format!($($fmt)+)
            )));
        }
    };
}

/// Fails the test unless `a == b`, printing both.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err($crate::ktap::Outcome::Fail(format!(
                "{}:{}: {}: {:?} != {:?}", file!(), line!(), format!($($fmt)+), a, b
            )));
        }
    }};
}

/// Skips the test with a reason.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {
        return Err($crate::ktap::Outcome::Skip(format!($($fmt)+)))
    };
}

/// Runs `tests` and prints KTAP; returns the number of failures.
pub fn run(suite: &str, tests: &[&Test]) -> usize {
    println!("KTAP version 1");
    println!("# suite: {suite}");
    println!("1..{}", tests.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, test) in tests.iter().enumerate() {
        let n = i + 1;
        let start = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(test.run))
            .unwrap_or_else(|_| Err(Outcome::Fail("the test panicked".into())));
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                passed += 1;
                println!("ok {n} {} # {secs:.1} s", test.name);
            }
            Err(Outcome::Skip(why)) => {
                skipped += 1;
                println!("ok {n} {} # SKIP {why}", test.name);
            }
            Err(Outcome::Fail(why)) => {
                failed += 1;
                for line in why.lines() {
                    println!("# {line}");
                }
                println!("not ok {n} {}", test.name);
            }
        }
    }
    if skipped > 0 {
        println!("# {skipped} skipped");
    }
    println!("{passed} passed, {failed} failed");
    failed
}
