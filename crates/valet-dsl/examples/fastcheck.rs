//! Whether the fast path reads a file (and then gives pest's tree: a mismatch is printed
//! and makes the exit status 1), and if not, the first line where pest accepts a prefix
//! that the fast path declines: `cargo run -p valet-dsl --example fastcheck FILE...`.
fn main() -> std::process::ExitCode {
    let mut mismatches = 0;
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).expect("readable file");
        if let Some(tree) = valet_dsl::parse_fast(&text) {
            if valet_dsl::parse_pest(&text).script.as_ref() == Some(&tree) {
                println!("{path}: fast");
            } else {
                println!("{path}: fast, but its tree differs from pest's");
                mismatches += 1;
            }
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        let mut found = false;
        for n in 1..=lines.len() {
            let prefix = lines[..n].join("\n");
            let pest_ok = valet_dsl::parse_pest(&prefix).diagnostics.is_empty();
            if pest_ok && valet_dsl::parse_fast(&prefix).is_none() {
                println!("{path}: declined at line {n}: {}", lines[n - 1]);
                found = true;
                break;
            }
        }
        if !found {
            println!("{path}: declined (no prefix shows it)");
        }
    }
    if mismatches > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
