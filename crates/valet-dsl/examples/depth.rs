//! Finds the deepest bracket nesting that parses on a given stack size: `depth STACK_KB`.
fn main() {
    let kb: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048);
    for depth in [16, 32, 64, 96, 128, 160, 200, 256] {
        let src = format!("def x = {}1{}", "(".repeat(depth), ")".repeat(depth));
        let ok = std::thread::Builder::new()
            .stack_size(kb * 1024)
            .spawn(move || valet_dsl::parse(&src).diagnostics.len())
            .expect("thread")
            .join();
        println!("depth {depth}: {:?}", ok);
    }
}
