//! Whether the fast path reads a file, and if not, the first line where pest accepts a
//! prefix that the fast path declines: `cargo run -p valet-dsl --example fastcheck FILE`.
fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).expect("readable file");
        if valet_dsl::parse_fast(&text).is_some() {
            println!("{path}: fast");
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
}
