//! A linear scan that runs before the grammar, so that pathological inputs (a 10 000-deep
//! nest of brackets) get a clear "nested too deeply" error instead of a deep recursion.
//!
//! It knows just enough of the lexical rules to skip strings and comments. It may
//! undercount nesting in odd inputs; the parser's own stack guard backs it up.

use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// Returns an error at the first place where brackets nest deeper than `max_depth`.
pub(crate) fn check_nesting(text: &str, max_depth: usize) -> Result<(), Diagnostic> {
    let b = text.as_bytes();
    let mut i = 0;
    // Each open bracket: the byte, and whether it is a `${` inside a GString (whose `}`
    // returns to the string).
    let mut stack: Vec<(u8, Option<Quote>)> = Vec::new();
    let mut quote: Option<Quote> = None;
    while i < b.len() {
        if let Some(q) = quote {
            // Inside a string only `\`, the quote, a line end and `$` matter.
            while i < b.len() && !matches!(b[i], b'\\' | b'\n' | b'$') && b[i] != q.byte {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            match q.step(b, i) {
                QuoteStep::End(n) => {
                    quote = None;
                    i += n;
                }
                QuoteStep::Interp => {
                    stack.push((b'{', Some(q)));
                    if stack.len() > max_depth {
                        return Err(too_deep(i, max_depth));
                    }
                    quote = None;
                    i += 2;
                }
                QuoteStep::Skip(n) => i += n,
            }
            continue;
        }
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'\'' | b'"' => {
                let triple = b.get(i + 1) == Some(&b[i]) && b.get(i + 2) == Some(&b[i]);
                let q = Quote { byte: b[i], triple };
                quote = Some(q);
                i += if triple { 3 } else { 1 };
            }
            b'(' | b'[' | b'{' => {
                stack.push((b[i], None));
                if stack.len() > max_depth {
                    return Err(too_deep(i, max_depth));
                }
                i += 1;
            }
            b')' | b']' | b'}' => {
                if let Some((_, back)) = stack.pop() {
                    quote = back;
                }
                i += 1;
            }
            _ => {
                i += 1;
                // Most bytes open, close or quote nothing: pass them in one go.
                while i < b.len() && !INTERESTING[b[i] as usize] {
                    i += 1;
                }
            }
        }
    }
    Ok(())
}

/// The bytes the scan acts on outside strings; every other byte is passed over.
static INTERESTING: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let bytes = b"/'\"([{)]}";
    while k < bytes.len() {
        t[bytes[k] as usize] = true;
        k += 1;
    }
    t
};

fn too_deep(at: usize, max_depth: usize) -> Diagnostic {
    Diagnostic::error(
        "limit",
        Span::new(at, at + 1),
        format!("the pipeline is nested too deeply (more than {max_depth} levels)"),
    )
    .with_label(format!("level {} starts here", max_depth + 1))
    .with_help("split the deepest part into a function, or flatten it")
}

#[derive(Clone, Copy)]
struct Quote {
    byte: u8,
    triple: bool,
}

enum QuoteStep {
    End(usize),
    Interp,
    Skip(usize),
}

impl Quote {
    fn step(self, b: &[u8], i: usize) -> QuoteStep {
        let c = b[i];
        if c == b'\\' {
            return QuoteStep::Skip(2.min(b.len() - i));
        }
        if c == self.byte {
            if !self.triple {
                return QuoteStep::End(1);
            }
            if b.get(i + 1) == Some(&c) && b.get(i + 2) == Some(&c) {
                return QuoteStep::End(3);
            }
        }
        if c == b'\n' && !self.triple {
            // An unterminated string: let the grammar report it.
            return QuoteStep::End(1);
        }
        if self.byte == b'"' && c == b'$' && b.get(i + 1) == Some(&b'{') {
            return QuoteStep::Interp;
        }
        QuoteStep::Skip(1)
    }
}

/// The brackets still open at the end of `text` (byte offset and bracket), outermost first.
pub(crate) fn unclosed(text: &str) -> Vec<(usize, u8)> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut stack: Vec<(usize, u8, Option<Quote>)> = Vec::new();
    let mut quote: Option<Quote> = None;
    while i < b.len() {
        if let Some(q) = quote {
            match q.step(b, i) {
                QuoteStep::End(n) => {
                    quote = None;
                    i += n;
                }
                QuoteStep::Interp => {
                    stack.push((i + 1, b'{', Some(q)));
                    quote = None;
                    i += 2;
                }
                QuoteStep::Skip(n) => i += n,
            }
            continue;
        }
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'\'' | b'"' => {
                let triple = b.get(i + 1) == Some(&b[i]) && b.get(i + 2) == Some(&b[i]);
                quote = Some(Quote { byte: b[i], triple });
                i += if triple { 3 } else { 1 };
            }
            b'(' | b'[' | b'{' => {
                stack.push((i, b[i], None));
                i += 1;
            }
            b')' | b']' | b'}' => {
                if let Some((_, _, back)) = stack.pop() {
                    quote = back;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    stack.into_iter().map(|(at, c, _)| (at, c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_brackets_are_refused_at_the_right_spot() {
        let text = "x = ".to_string() + &"(".repeat(300) + "1" + &")".repeat(300);
        let err = check_nesting(&text, 256).unwrap_err();
        assert_eq!(err.span.start as usize, 4 + 256);
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let text = format!(
            "echo '{}' // {}\n/* {} */ echo \"${{ [1] }}\"",
            "(".repeat(500),
            "[".repeat(500),
            "{".repeat(500)
        );
        check_nesting(&text, 4).unwrap();
    }

    #[test]
    fn interpolation_nests() {
        let text = "echo \"${ \"${ \"${ x }\" }\" }\"";
        assert!(check_nesting(text, 2).is_err());
        check_nesting(text, 3).unwrap();
    }
}
