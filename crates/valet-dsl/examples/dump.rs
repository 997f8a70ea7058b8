//! Prints the AST (or the diagnostics) of a pipeline file: `cargo run -p valet-dsl --example dump FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE");
    let text = std::fs::read_to_string(&path).expect("readable file");
    let out = valet_dsl::parse(&text);
    let file = valet_dsl::SourceFile::new(path, text);
    if let Some(s) = &out.script {
        println!("{}", serde_json::to_string_pretty(s).expect("json"));
    }
    print!("{}", valet_dsl::render_all(&out.diagnostics, &file));
}
