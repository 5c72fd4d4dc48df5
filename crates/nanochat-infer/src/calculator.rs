//! The calculator tool (upstream `engine.py`, `use_calculator`), without an interpreter: a small
//! parser that accepts exactly what upstream lets through to Python's `eval` and means the same
//! thing — arithmetic on numbers with `+ - * / ( )` (no `**`; `/` is true division; integers
//! stay exact), and `'text'.count('x')`. Everything else gives `None`, as upstream does.
//! Results print like Python's `str()` (`7`, `2.5`, `4.0`, `1e+16`).

/// A Python number: exact integer or float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` for integral values, exponent form
/// outside `[1e-4, 1e16)`.
fn py_float(x: f64) -> Option<String> {
    if !x.is_finite() {
        return None; // inf/nan only arise from overflow, which Python reports as an error
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{x:e}"); // e.g. 1e16, 1.5e-5
        let (m, e) = s.split_once('e')?;
        let e: i32 = e.parse().ok()?;
        return Some(format!(
            "{m}e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.abs()
        ));
    }
    let s = format!("{x}");
    Some(if s.contains('.') { s } else { format!("{s}.0") })
}

fn show(n: Num) -> Option<String> {
    match n {
        Num::Int(i) => Some(i.to_string()),
        Num::Float(f) => py_float(f),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i] == b' ' {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expr(&mut self, depth: usize) -> Option<Num> {
        let mut acc = self.term(depth)?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let rhs = self.term(depth)?;
            acc = arith(acc, rhs, op)?;
        }
        Some(acc)
    }

    fn term(&mut self, depth: usize) -> Option<Num> {
        let mut acc = self.unary(depth)?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            if op == b'*' && self.s.get(self.i) == Some(&b'*') {
                return None; // power is refused, like upstream
            }
            let rhs = self.unary(depth)?;
            acc = arith(acc, rhs, op)?;
        }
        Some(acc)
    }

    fn unary(&mut self, depth: usize) -> Option<Num> {
        if depth > 64 {
            return None;
        }
        match self.peek()? {
            b'-' => {
                self.i += 1;
                match self.unary(depth + 1)? {
                    Num::Int(i) => Some(Num::Int(i.checked_neg()?)),
                    Num::Float(f) => Some(Num::Float(-f)),
                }
            }
            b'+' => {
                self.i += 1;
                self.unary(depth + 1)
            }
            b'(' => {
                self.i += 1;
                let v = self.expr(depth + 1)?;
                (self.peek()? == b')').then(|| self.i += 1)?;
                Some(v)
            }
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Option<Num> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.') {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if text.is_empty() {
            return None;
        }
        if text.contains('.') {
            // Python accepts "1.", ".5" but not "." or "1.2.3".
            if text == "." || text.matches('.').count() > 1 {
                return None;
            }
            return text.parse::<f64>().ok().map(Num::Float);
        }
        // Python 3 rejects leading zeros in non-zero integer literals ("012").
        if text.len() > 1 && text.starts_with('0') && text.bytes().any(|b| b != b'0') {
            return None;
        }
        text.parse::<i128>().ok().map(Num::Int)
    }
}

fn arith(a: Num, b: Num, op: u8) -> Option<Num> {
    Some(match (a, b, op) {
        (_, _, b'/') => {
            let d = b.f();
            if d == 0.0 {
                return None; // ZeroDivisionError
            }
            Num::Float(a.f() / d)
        }
        (Num::Int(x), Num::Int(y), b'+') => Num::Int(x.checked_add(y)?),
        (Num::Int(x), Num::Int(y), b'-') => Num::Int(x.checked_sub(y)?),
        (Num::Int(x), Num::Int(y), b'*') => Num::Int(x.checked_mul(y)?),
        (x, y, b'+') => Num::Float(x.f() + y.f()),
        (x, y, b'-') => Num::Float(x.f() - y.f()),
        (x, y, b'*') => Num::Float(x.f() * y.f()),
        _ => return None,
    })
}

/// `'text'.count('x')` (either quote style, no escapes): Python's non-overlapping count.
fn string_count(expr: &str) -> Option<String> {
    let literal = |s: &str| -> Option<(String, usize)> {
        let s_trim = s.trim_start_matches(' ');
        let skipped = s.len() - s_trim.len();
        let q = s_trim.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let end = s_trim[1..].find(q)? + 1;
        Some((s_trim[1..end].to_string(), skipped + end + 1))
    };
    let (text, n) = literal(expr)?;
    let rest = expr[n..].trim_start_matches(' ');
    let rest = rest.strip_prefix(".count(")?;
    let (needle, m) = literal(rest)?;
    let tail = rest[m..].trim_matches(' ');
    if tail != ")" {
        return None;
    }
    let count = if needle.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(needle.as_str()).count()
    };
    Some(count.to_string())
}

const DANGEROUS: [&str; 16] = [
    "__",
    "import",
    "exec",
    "eval",
    "compile",
    "open",
    "file",
    "input",
    "raw_input",
    "globals",
    "locals",
    "vars",
    "dir",
    "getattr",
    "setattr",
    "delattr",
];

/// Evaluates a calculator expression the way upstream's tool does; `None` when upstream would
/// refuse it or Python would raise.
pub fn use_calculator(expr: &str) -> Option<String> {
    let expr = expr.replace(',', "");
    if expr.chars().all(|c| "0123456789*+-/.() ".contains(c)) {
        if expr.contains("**") {
            return None;
        }
        let mut p = Parser {
            s: expr.as_bytes(),
            i: 0,
        };
        let v = p.expr(0)?;
        p.ws();
        return if p.i == expr.len() { show(v) } else { None };
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "'\"()._ ".contains(c);
    if !expr.chars().all(allowed) {
        return None;
    }
    let lower = expr.to_lowercase();
    if DANGEROUS.iter().any(|d| lower.contains(d)) || lower.contains("hasattr") {
        return None;
    }
    if !expr.contains(".count(") {
        return None;
    }
    string_count(&expr)
}

#[cfg(test)]
mod tests {
    use super::use_calculator as calc;

    #[test]
    fn arithmetic_like_python() {
        assert_eq!(calc("2 + 3").as_deref(), Some("5"));
        assert_eq!(calc("1,000 * 3").as_deref(), Some("3000"));
        assert_eq!(calc("10 / 4").as_deref(), Some("2.5"));
        assert_eq!(calc("8 / 2").as_deref(), Some("4.0"));
        assert_eq!(calc("-(3 - 5) * 2").as_deref(), Some("4"));
        assert_eq!(calc("0.1 + 0.2").as_deref(), Some("0.30000000000000004"));
        assert_eq!(calc("1e3").as_deref(), None); // 'e' is not an allowed character
        assert_eq!(calc("10000000000000000 / 1").as_deref(), Some("1e+16"));
        assert_eq!(calc("1 / 100000").as_deref(), Some("1e-05"));
        assert_eq!(calc("2 ** 10"), None);
        assert_eq!(calc("1 / 0"), None);
        assert_eq!(calc("(1 + 2"), None);
        assert_eq!(calc("012"), None);
        assert_eq!(calc(""), None);
    }

    #[test]
    fn string_count_only() {
        assert_eq!(calc("'strawberry'.count('r')").as_deref(), Some("3"));
        assert_eq!(calc("\"banana\".count(\"an\")").as_deref(), Some("2"));
        assert_eq!(calc("'aaaa'.count('aa')").as_deref(), Some("2"));
        assert_eq!(calc("'abc'.count('')").as_deref(), Some("4"));
        assert_eq!(calc("'abc'.upper()"), None);
        assert_eq!(calc("__import__('os').system('ls')"), None);
        assert_eq!(calc("open('x').read().count('a')"), None);
        assert_eq!(calc("'a'.count('a') + 1"), None);
    }
}
