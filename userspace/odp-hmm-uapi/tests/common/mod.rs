// SPDX-License-Identifier: GPL-2.0

//! What the tests that check Rust against C headers share: compiling and running a small C
//! program, and reading the `name value` lines it prints.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    str::FromStr,
    sync::atomic::{
        AtomicUsize,
        Ordering, //
    },
};

/// Compiles `prelude` (includes, defines) and `body` (the statements of `main`) with the C
/// compiler (`$CC`, else `cc`), `-Wall -Werror` and the include directories `include`, runs the
/// program and returns its standard output.
pub fn run_c(prelude: &str, body: &str, include: &[&Path]) -> String {
    // One directory per call: the tests of a file run in parallel.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("odp-hmm-c-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (src, exe) = (dir.join("check.c"), dir.join("check"));
    let program = format!("{prelude}\nint main(void) {{\n{body}\nreturn 0;\n}}\n");
    std::fs::write(&src, program).expect("write the C source");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.arg("-Wall").arg("-Werror");
    for dir in include {
        cmd.arg("-I").arg(dir);
    }
    let status = cmd
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "the C program does not compile");
    let out = Command::new(&exe).output().expect("run the C program");
    assert!(out.status.success(), "the C program failed");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The `name value` lines of `out`, as a map.
pub fn values<T: FromStr>(out: &str) -> BTreeMap<String, T> {
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("name value");
            (k.to_string(), v.parse().ok().expect("a number"))
        })
        .collect()
}

/// Adds to `$c` the C statements that print the size of `struct $t` and the offset of each
/// field, and to `$rust` the Rust mirror's values under the same names.
#[allow(unused_macros)]
macro_rules! check_struct {
    ($c:ident, $rust:ident, $t:ident { $($f:ident),* $(,)? }) => {{
        let mut body = format!("P(\"{0}.size\", sizeof(struct {0}));\n", stringify!($t));
        $(body += &format!("P(\"{0}.{1}\", offsetof(struct {0}, {1}));\n", stringify!($t), stringify!($f));)*
        $c += &body;
        $rust.insert(format!("{}.size", stringify!($t)), size_of::<$t>() as u64);
        $($rust.insert(format!("{}.{}", stringify!($t), stringify!($f)), offset_of!($t, $f) as u64);)*
    }};
}

/// Adds to `$c` the C statements that print each constant, and to `$rust` the Rust values.
#[allow(unused_macros)]
macro_rules! check_consts {
    ($c:ident, $rust:ident, $($name:ident),* $(,)?) => {{
        $(
            $c += &format!("P(\"{0}\", {0});\n", stringify!($name));
            $rust.insert(stringify!($name).to_string(), $name as u64);
        )*
    }};
}
