//! The fast path against the specification: on every input, `parse_fast` either leaves
//! the file to pest (`None`) or gives exactly the tree the pest grammar and its builder
//! give, and pest accepts it without a diagnostic. So [`valet_dsl::parse`] (fast path
//! first, pest otherwise) always returns what pest alone returns; the tests below check
//! that too, diagnostics included.
//!
//! Inputs: every file of `pipelines/` and `pipelines/invalid/`, the fuzz regressions, a set
//! of hand-written edge cases (spans that end after skipped white space, comments in odd
//! places, every string form), and a few thousand random mutations and token soups made by
//! a seeded generator.

use std::path::Path;
use valet_dsl::{parse, parse_fast, parse_pest};

/// pest's error detail is a process-wide flag that the failing path flips, so diagnostics
/// are only comparable when one check runs at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checks one input; returns whether the fast path took it.
fn check(name: &str, text: &str) -> bool {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pest = parse_pest(text);
    let fast = parse_fast(text);
    if let Some(tree) = &fast {
        assert!(
            pest.diagnostics.is_empty(),
            "{name}: the fast path accepts what pest refuses:\n{text}\n{:?}",
            pest.diagnostics
        );
        let Some(spec) = &pest.script else {
            panic!("{name}: pest gives no tree")
        };
        if spec != tree {
            let a = serde_json::to_string_pretty(spec).unwrap();
            let b = serde_json::to_string_pretty(tree).unwrap();
            let line = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            let from = line.saturating_sub(30);
            panic!(
                "{name}: trees differ for\n{text}\n--- pest (from line {from}):\n{}\n--- fast:\n{}",
                a.lines().skip(from).take(40).collect::<Vec<_>>().join("\n"),
                b.lines().skip(from).take(40).collect::<Vec<_>>().join("\n"),
            );
        }
    }
    // What callers see is pest's answer, whichever path produced it (inputs here are
    // within the size and nesting limits, or both refuse them in the prescan).
    let both = parse(text);
    if both.diagnostics.iter().all(|d| d.code != "limit") {
        assert_eq!(
            both.script, pest.script,
            "{name}: parse() differs from pest"
        );
        assert_eq!(
            both.diagnostics, pest.diagnostics,
            "{name}: diagnostics differ"
        );
    }
    fast.is_some()
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).expect("readable")).into_owned();
            (p.display().to_string(), text)
        })
        .collect();
    out.sort();
    out
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_corpus_parses_the_same_and_takes_the_fast_path() {
    let mut declined = Vec::new();
    for (name, text) in files(&root().join("pipelines")) {
        if !check(&name, &text) && parse_pest(&text).diagnostics.is_empty() {
            declined.push(name);
        }
    }
    // Every valid example is read by the fast path: it is what the benchmarks measure.
    assert!(declined.is_empty(), "the fast path declines {declined:?}");
}

#[test]
fn invalid_examples_and_fuzz_regressions_agree() {
    for (name, text) in files(&root().join("pipelines/invalid")) {
        check(&name, &text);
    }
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions"
    ));
    for (name, text) in files(dir) {
        check(&name, &text);
    }
}

const EDGE_CASES: &[&str] = &[
    "sh 'make'   // trailing comment\nx = a + b  \n",
    "x = a /* c */ + b /* d */\n",
    "def x = foo /* c */\n",
    "echo \"a ${b} c $d.e.f g\" /* x */",
    "echo \"\"\"\n  multi ${x}\n  \"line\" $y\n\"\"\"\n",
    "echo '''a\nb\\'c'''",
    "echo 'a\\u0041\\n'",
    "echo \"a\\$b\"",
    "def r = /a\\/b[0-9]+/\nx = 4 / 2 / 1",
    "x = [a: 1, 'b': 2, \"c\": 3, (d): 4, 5: 6]",
    "x = [:]\ny = []\nz = [1, 2, 3,]\nw = [\n  a: 1,\n  b: 2,\n]",
    "a?.b?.c()\na.'b'.\"c\"\n",
    "foo\n  .bar()\n  ?.baz { x -> x }\n",
    "node('x')\n{\n  sh 'y'\n}",
    "node\n{\n}",
    "if (a) b() else if (c) d() else e()",
    "if (a) {\n} else if (b) {\n}\nelse {\n}\n",
    "if (a) {\n}\n\nelse {\n}",
    "for (x in xs) { echo x }\nfor (def y : ys) echo y\nfor (String s in ss) {}",
    "for (int i = 0; i < 10; i++) { echo i }\nfor (;;) { break }\nfor (i = 0; i < n; i += 1) continue",
    "while (true) { break }",
    "try {\n  a()\n} catch (IOException | InterruptedException e) {\n} catch (e) {\n} finally {\n}",
    "try { a() }\ncatch (Exception e) { }\nfinally { }",
    "switch (x) {\n  case 'a':\n    echo 1\n    break\n  case 2: case 3: echo 2\n  default:\n    echo 3\n}",
    "def f(a, String b = 'x', def c, final d) {\n  return a\n}\nString g() { return }\nprivate static int h(int x) throws Exception { x }",
    "List<Map<String, Object>> xs = []\nMap m = [:]\nint n = 1\nString s\n",
    "final x = 1\nfinal def y = 2\ndef z\n",
    "def out = sh script: 'x', returnStdout: true\nout = sh(script: 'y').trim()",
    "x = a ? b : c\ny = a ?: b\nz = a\n  ? b\n  : c",
    "x = !a && -b || ~c\ny = ++i + j-- - --k\nz = a ** b * c / d % e + f - g << h >> i",
    "x = a < b <= c > d >= e == f != g <=> h =~ i ==~ j & k ^ l | m",
    "x = a in b\ny = a !in b\nz = a instanceof String\nw = 1..2\nv = 1..<2",
    "x = y as Integer\nz = (a as String[])",
    "x = new Date()\ny = new String[3]\nz = new Foo(a: 1) { }\n",
    "x = 0x1F + 1_000 + 1.5 + 2e10 + 3L + 4.0f + 5d + 0xffL",
    "x = true && false || null\n",
    "assert x == 1 : 'x must be 1'\nassert y, 'm'\nassert z\n",
    "throw new Exception('x')\nthrow err\n",
    "return\n",
    "def f() { return x }\n",
    "m['k'] = 1\nm.a.b = 2\nm?.c = 3\nenv.X += 'y'\nx -= 1\nx *= 2\nx /= 3\nx ?= 4\n",
    "a.b.c 'x'\ngit url: 'x', branch: 'main'\ncheckout scm\nstage 'Build'\nsh \"${x}\"\n",
    "echo 1; echo 2;; echo 3\n",
    "parallel(\n  'a': { sh 'x' },\n  b: {\n    sh 'y'\n  },\n  failFast: true\n)",
    "xs.each { x -> echo x }\nxs.collect { it * 2 }\nxs.eachWithIndex { x, i -> }\n{ -> }\n",
    "def c = { String a, def b, final c -> a }\n",
    "x = \"${}\"\ny = \"${ a }\"\nz = \"$\"\nw = \"a$ b\"\n",
    "x = 'a' +\n  'b' +\n  'c'",
    "sh 'a' \\\n  + 'b'\n",
    "\u{feff}echo 'bom'\n",
    "echo\u{a0}'nbsp'\n",
    "x = a\r\ny = b\r\nif (x) {\r\n}\r\n",
    "/* only a comment */",
    "",
    "\n\n\n",
    "// c\n",
    "x = [a:1]\ny = [a : 1]\nz = [if: 1, class: 2]\n",
    "x = [a::b]\n",
    "foo(a: 1, 'b', c: 2)\nfoo 'b', c: 2\n",
    "docker.image('x').inside('-u 0') {\n  sh 'y'\n}\n",
    "def x = \"${env.A}-${env.B}\"\n",
    "sh \"\"\"\n  a \\\\\n  b ${c}\n\"\"\"\n",
    "x = a.b[1][c].d()\ny = a[1]++\n",
    "x = -1\ny = - 1\nz = +1\nw = a - -1\n",
    "x = a\n-1\n",
    "echo x ? 'a' : 'b'\n",
    "properties([parameters([string(name: 'A', defaultValue: 'x')])])\n",
    "timeout(time: 5, unit: 'MINUTES') { sh 'x' }\n",
    "x = a.&b\ny = a*.b\n",
    "x = [1, a: 2]\n",
    "x = 99999999999999999999\n",
    "echo 'a\\qb'\n",
    "m << x\nm <<= x\n",
    "@NonCPS\ndef f() {}\n",
    "@NonCPS\n\n@ Override\nprivate def f() {}\n",
    "@NonCPS def f() {}\n",
    "@Library('x') _\n",
    "@NonCPS\nString x = 1\n",
    "@Grab('a:b:1')\nimport a.B\n",
    "package a.b.c\n\necho 'x'\n",
    "package a.b.c; echo 'x'\n",
    "package a.\necho 'x'\n",
    "import foo.Bar\n",
    "class A {}\n",
    "#!/usr/bin/env groovy\necho 'x'\n",
    "package a.b\necho 'x'\n",
    "#! a /* x\n y */ b\necho 1",
    "#!x \\\ny\necho 1\n",
    "// c\n#!x\necho 1\n",
    "foo.'${x}'\n",
    "final.Foo x = 1\n",
    "def x = a\n    ?: 'b'",
    "sh(\n  script: 'x',\n  returnStdout: true,\n)\n",
    "if (x) echo 'a' else echo 'b'",
    "a =\n  1\n",
    "x = a.\n  b\n",
    "x = { it }\ny = { -> it }\n",
    "x = a()()\n",
    "x = (a)\ny = ((a + b) * c)\n",
    "x = 'a'\\\n",
    "def x = \"\"\"${\"\"\"a\"\"\"}\"\"\"\n",
];

#[test]
fn edge_cases_agree() {
    let mut fast = 0;
    for (i, text) in EDGE_CASES.iter().enumerate() {
        fast += check(&format!("edge case {i}"), text) as usize;
    }
    eprintln!("fast path took {fast} of {} edge cases", EDGE_CASES.len());
}

/// How many times over to run the random tests: `VALET_DIFFERENTIAL_ROUNDS=50 cargo test
/// --release -p valet-dsl --test differential` for a longer search (each round has its
/// own seed).
fn rounds() -> u64 {
    std::env::var("VALET_DIFFERENTIAL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A small seeded generator (xorshift), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    " ",
    " ",
    " ",
    "\n",
    "\n",
    "\t",
    ";",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ".",
    "?.",
    "?",
    "?:",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "%",
    "!",
    "&&",
    "||",
    "<",
    ">",
    "<=",
    "..",
    "->",
    "++",
    "'a'",
    "'''b'''",
    "\"c\"",
    "\"d${e}\"",
    "\"$f.g\"",
    "\"\"\"h\"\"\"",
    "/i/",
    "1",
    "2.5",
    "0x1F",
    "x",
    "y",
    "sh",
    "node",
    "stage",
    "echo",
    "env",
    "def",
    "if",
    "else",
    "for",
    "in",
    "while",
    "try",
    "catch",
    "finally",
    "return",
    "new",
    "as",
    "true",
    "null",
    "String",
    "Foo",
    "it",
    "// c\n",
    "/* c */",
    "\\\n",
    "@",
    "$",
    "${",
    "\"",
    "'",
];

fn token_soup(rng: &mut Rng) -> String {
    let n = 1 + rng.below(24);
    (0..n).map(|_| TOKENS[rng.below(TOKENS.len())]).collect()
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        if chars.is_empty() {
            break;
        }
        let at = rng.below(chars.len());
        match rng.below(4) {
            0 => {
                let n = 1 + rng.below(4);
                chars.drain(at..(at + n).min(chars.len()));
            }
            1 | 2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                for (k, c) in t.chars().enumerate() {
                    chars.insert(at + k, c);
                }
            }
            _ => {
                let b = rng.below(chars.len());
                chars.swap(at, b);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_token_soups_agree() {
    let mut fast = 0;
    for round in 0..rounds() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D));
        for i in 0..4000 {
            let text = token_soup(&mut rng);
            fast += check(&format!("soup {round}/{i}"), &text) as usize;
        }
    }
    eprintln!("fast path took {fast} of {} soups", 4000 * rounds());
}

#[test]
fn random_mutations_of_the_examples_agree() {
    let mut seeds: Vec<String> = EDGE_CASES.iter().map(|s| s.to_string()).collect();
    for (_, text) in files(&root().join("pipelines")) {
        // Mutate a window of each example, so each check stays quick.
        let lines: Vec<&str> = text.lines().collect();
        for chunk in lines.chunks(12) {
            seeds.push(chunk.join("\n"));
        }
    }
    let mut fast = 0;
    for round in 0..rounds() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D));
        for i in 0..3000 {
            let seed = &seeds[rng.below(seeds.len())];
            let text = mutate(&mut rng, seed);
            fast += check(&format!("mutation {round}/{i}"), &text) as usize;
        }
    }
    eprintln!("fast path took {fast} of {} mutations", 3000 * rounds());
}
