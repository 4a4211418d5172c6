//! CEL expressions inside a contract: compiling, the static checks `nexus contract
//! check` runs (variables, record fields, types, functions, cost), and evaluation.
//!
//! CEL (through the `cel` crate, the maintained successor of `cel-interpreter`) is
//! the expression language; what is ours is the check that a rule only reads what a
//! Fact has, and the cost bound. CEL has no loops but its comprehension macros, so an
//! expression's cost is bounded by its size times the longest list a body can hold;
//! that bound is computed here and refused above [`MAX_EXPR_COST`].

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{Expr as Ast, LiteralValue, operators};
use cel::objects::{Key, Map};
use cel::{Context, Env, IdedExpr, Program, Value as Cel};
use nexus_core::{FihHash, Limits};
use serde_json::Value as Json;

/// Most steps one expression may take by its static bound (nodes visited, each
/// comprehension counted as its body times the longest list a record body can hold).
pub const MAX_EXPR_COST: u64 = 1_000_000;

/// Most tokens (names, literals, operators, brackets) one expression may have. The
/// CEL parser and the checker recurse once per nesting level of the syntax tree, and a
/// long operator chain such as `a + a + … + a` is as deep as it is long; this bound,
/// checked by [`scan`] before anything recursive runs, keeps both far from the stack's
/// end.
pub const MAX_EXPR_TOKENS: usize = 256;

/// Deepest nesting of `(`, `[` and `{` one expression may have (see
/// [`MAX_EXPR_TOKENS`]). The CEL parser takes up to ~200 KiB of stack a bracket level
/// in a debug build, so this is small: 8 levels fit a 2 MiB thread stack with room.
pub const MAX_EXPR_DEPTH: usize = 8;

/// Which variables an expression sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `where` and `group`: the Fact under test, `fact`.
    Fact,
    /// The Hint a rule emits: `fact` (the Fact that completed the trigger), `facts`
    /// (every triggering Fact, oldest first) and `group` (the group's value).
    Emit,
}

/// What an expression must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// `true` or `false`.
    Bool,
    /// A scalar: string, integer or boolean (group keys, interpolation).
    Scalar,
    /// Anything JSON can hold with integers only (a selector body member).
    Json,
}

/// The static type of an expression, as far as the checker knows it.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Null,
    List(Box<Ty>),
    Map,
    Fact,
    Resolves,
    Type,
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Double => "double".into(),
            Ty::Str => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null".into(),
            Ty::List(t) => format!("list({})", t.name()),
            Ty::Map => "map".into(),
            Ty::Fact => "Fact".into(),
            Ty::Resolves => "Fact.resolves".into(),
            Ty::Type => "type".into(),
        }
    }
    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }
    fn known(&self) -> bool {
        !matches!(self, Ty::Dyn)
    }
    /// Whether values of the two types can ever be compared for order.
    fn ordered_with(&self, other: &Ty) -> bool {
        !self.known()
            || !other.known()
            || (self.numeric() && other.numeric())
            || matches!(
                (self, other),
                (Ty::Str, Ty::Str) | (Ty::Bool, Ty::Bool) | (Ty::Bytes, Ty::Bytes)
            )
    }
    /// Whether `==` between the two types can ever be true.
    fn equatable_with(&self, other: &Ty) -> bool {
        self.ordered_with(other)
            || matches!(self, Ty::Null)
            || matches!(other, Ty::Null)
            || matches!(
                (self, other),
                (Ty::List(_), Ty::List(_))
                    | (
                        Ty::Map | Ty::Fact | Ty::Resolves,
                        Ty::Map | Ty::Fact | Ty::Resolves
                    )
                    | (Ty::Type, Ty::Type)
            )
    }
}

/// The fields of a Fact as a rule sees it, with their types.
pub const FACT_FIELDS: [&str; 8] = [
    "hash", "topic", "body", "author", "time", "at", "parents", "resolves",
];

fn fact_field(name: &str) -> Option<Ty> {
    Some(match name {
        "hash" | "topic" | "author" => Ty::Str,
        "body" => Ty::Dyn,
        "time" | "at" => Ty::Int,
        "parents" => Ty::List(Box::new(Ty::Str)),
        "resolves" => Ty::Resolves,
        _ => return None,
    })
}

/// A compiled, checked expression.
#[derive(Debug)]
pub(crate) struct Expr {
    program: Program,
    cost: u64,
}

impl Expr {
    /// The static bound of its cost, in steps.
    pub(crate) fn cost(&self) -> u64 {
        self.cost
    }

    /// Evaluates against `ctx`.
    pub(crate) fn eval(&self, ctx: &Context<'_, '_>) -> Result<Cel, String> {
        self.program.execute(ctx).map_err(|e| e.to_string())
    }
}

/// A problem found in an expression, at a byte offset within its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Compiles and checks `text`.
pub(crate) fn compile(
    env: &Env,
    text: &str,
    scope: Scope,
    want: Want,
    limits: &Limits,
) -> Result<Expr, Vec<ExprError>> {
    scan(text).map_err(|e| vec![e])?;
    let program = env.compile(text).map_err(|errs| {
        errs.errors
            .iter()
            .map(|e| ExprError {
                offset: offset_of(text, e.pos.0, e.pos.1),
                message: format!("invalid CEL expression: {}", e.msg),
            })
            .collect::<Vec<_>>()
    })?;
    let mut vars = vec![("fact".to_owned(), Ty::Fact)];
    if scope == Scope::Emit {
        vars.push(("facts".to_owned(), Ty::List(Box::new(Ty::Fact))));
        vars.push(("group".to_owned(), Ty::Dyn));
    }
    // Longest list a canonical body can hold: "[0,0,…]" takes two bytes an element.
    let list_bound = (limits.max_body_bytes as u64 / 2).max(1);
    let mut checker = Checker {
        vars,
        errors: Vec::new(),
        list_bound,
        byte_bound: (limits.max_body_bytes as u64).max(1),
    };
    let (ty, cost) = checker.check(program.expression());
    let root = program.expression();
    let mut errors: Vec<ExprError> = checker
        .errors
        .into_iter()
        .map(|(id, message)| ExprError {
            offset: node_offset(&program, id),
            message,
        })
        .collect();
    let fits = match want {
        Want::Bool => matches!(ty, Ty::Bool | Ty::Dyn),
        Want::Scalar => matches!(ty, Ty::Bool | Ty::Int | Ty::Uint | Ty::Str | Ty::Dyn),
        Want::Json => !matches!(ty, Ty::Double | Ty::Bytes | Ty::Type),
    };
    if !fits {
        let expected = match want {
            Want::Bool => "a bool",
            Want::Scalar => "a string, an integer or a bool",
            Want::Json => "a JSON value with integer numbers",
        };
        errors.push(ExprError {
            offset: node_offset(&program, root.id),
            message: format!("type error: expected {expected}, found {}", ty.name()),
        });
    }
    if cost > MAX_EXPR_COST {
        errors.push(ExprError {
            offset: 0,
            message: format!(
                "expression may take up to {cost} evaluation steps (nested comprehensions \
                 over Fact bodies, or `+` chains of strings or lists?); the limit is \
                 {MAX_EXPR_COST}"
            ),
        });
    }
    if errors.is_empty() {
        Ok(Expr { program, cost })
    } else {
        errors.sort_by_key(|e| e.offset);
        Err(errors)
    }
}

/// Refuses, without recursion, an expression with more than [`MAX_EXPR_TOKENS`]
/// tokens or nested deeper than [`MAX_EXPR_DEPTH`], at the token that goes over. A
/// small lexer: string and bytes literals (quoted, triple-quoted, raw) and `//`
/// comments are skipped, a run of letters, digits and `_` is one token, and so is a
/// two-character operator.
pub(crate) fn scan(text: &str) -> Result<(), ExprError> {
    let b = text.as_bytes();
    let (mut i, mut tokens, mut depth) = (0usize, 0usize, 0usize);
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"//") {
            i = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            continue;
        }
        let start = i;
        tokens += 1;
        if tokens > MAX_EXPR_TOKENS {
            return Err(ExprError {
                offset: start,
                message: format!(
                    "expression too long: more than {MAX_EXPR_TOKENS} tokens (split the \
                     condition across rules, or simplify it)"
                ),
            });
        }
        if c == b'"' || c == b'\'' {
            i = string_end(b, start, false);
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            // `r"…"`, `b'…'`, `br"…"`: the prefix and its string are one token.
            if i < b.len() && matches!(b[i], b'"' | b'\'') && i - start <= 2 {
                let raw = b[start..i].iter().any(|c| matches!(c, b'r' | b'R'));
                i = string_end(b, i, raw);
            }
            continue;
        }
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_EXPR_DEPTH {
                    return Err(ExprError {
                        offset: start,
                        message: format!(
                            "expression nested too deeply: more than {MAX_EXPR_DEPTH} levels \
                             of brackets"
                        ),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let two = b.get(i..i + 2);
        i += if matches!(
            two,
            Some(b"&&" | b"||" | b"==" | b"!=" | b"<=" | b">=" | b"?." | b"?[")
        ) {
            2
        } else {
            // One character (a multi-byte one stays whole for the CEL parser to refuse).
            text[i..].chars().next().map_or(1, char::len_utf8)
        };
    }
    Ok(())
}

/// Byte index just past the string literal whose opening quote is at `at` (the end
/// of `b` when it is not closed: the CEL parser then reports it).
fn string_end(b: &[u8], at: usize, raw: bool) -> usize {
    let q = b[at];
    let triple = b.get(at..at + 3).is_some_and(|t| t.iter().all(|&c| c == q));
    let mut i = at + if triple { 3 } else { 1 };
    while i < b.len() {
        if b[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if b[i] == q && (!triple || b.get(i..i + 3).is_some_and(|t| t.iter().all(|&c| c == q))) {
            return i + if triple { 3 } else { 1 };
        }
        i += 1;
    }
    b.len()
}

/// Byte offset of a CEL parser position (1-based line, 0-based column in characters).
fn offset_of(text: &str, line: isize, col: isize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as isize + 1 == line {
            let col = col.max(0) as usize;
            return offset + l.char_indices().nth(col).map_or(l.len(), |(b, _)| b);
        }
        offset += l.len();
    }
    text.len()
}

fn node_offset(program: &Program, id: u64) -> usize {
    program
        .source_info()
        .offset_for(id)
        .map_or(0, |(start, _)| start as usize)
}

struct Checker {
    vars: Vec<(String, Ty)>,
    errors: Vec<(u64, String)>,
    list_bound: u64,
    /// Longest string (in bytes) or list (in elements) a value read from a record can
    /// be: its body's size bound.
    byte_bound: u64,
}

impl Checker {
    fn err(&mut self, id: u64, message: String) -> Ty {
        self.errors.push((id, message));
        Ty::Dyn
    }

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    /// A bound on the length of `e`'s value when it is a string (bytes) or a list
    /// (elements): literals by their length, a `+` by the sum of its operands, a
    /// conditional by its longer branch, anything else by [`Checker::byte_bound`]
    /// (what a record can hold; a comprehension's list has at most that many items).
    /// Recursive, but run only on expressions [`scan`] let through.
    fn len_bound(&self, e: &IdedExpr) -> u64 {
        match &e.expr {
            Ast::Literal(LiteralValue::String(s)) => s.len() as u64,
            Ast::Literal(LiteralValue::Bytes(b)) => b.len() as u64,
            Ast::Literal(_) => 1,
            Ast::List(l) => l.elements.len() as u64,
            Ast::Map(m) => m.entries.len() as u64,
            Ast::Call(c) if c.func_name == operators::ADD && c.args.len() == 2 => self
                .len_bound(&c.args[0])
                .saturating_add(self.len_bound(&c.args[1])),
            Ast::Call(c) if c.func_name == operators::CONDITIONAL && c.args.len() == 3 => {
                self.len_bound(&c.args[1]).max(self.len_bound(&c.args[2]))
            }
            _ => self.byte_bound,
        }
    }

    /// The type of `e` and the static bound of its cost.
    fn check(&mut self, e: &IdedExpr) -> (Ty, u64) {
        match &e.expr {
            Ast::Unspecified => (Ty::Dyn, 1),
            Ast::Literal(l) => (
                match l {
                    LiteralValue::Boolean(_) => Ty::Bool,
                    LiteralValue::Bytes(_) => Ty::Bytes,
                    LiteralValue::Double(_) => Ty::Double,
                    LiteralValue::Int(_) => Ty::Int,
                    LiteralValue::Null => Ty::Null,
                    LiteralValue::String(_) => Ty::Str,
                    LiteralValue::UInt(_) => Ty::Uint,
                },
                1,
            ),
            Ast::Ident(name) => match self.lookup(name) {
                Some(t) => (t, 1),
                None if is_type_name(name) => (Ty::Type, 1),
                None => {
                    let known: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
                    let t = self.err(
                        e.id,
                        format!(
                            "unknown variable `{name}` (in scope here: {})",
                            known.join(", ")
                        ),
                    );
                    (t, 1)
                }
            },
            Ast::Select(sel) => {
                let (t, c) = self.check(&sel.operand);
                let field = &sel.field;
                let ft = match t {
                    Ty::Fact => match fact_field(field) {
                        Some(ft) => ft,
                        None => self.err(
                            e.id,
                            format!(
                                "unknown field `{field}` of a Fact (it has: {})",
                                FACT_FIELDS.join(", ")
                            ),
                        ),
                    },
                    Ty::Resolves => match field.as_str() {
                        "intent" => Ty::Str,
                        "token" => Ty::Int,
                        _ => self.err(
                            e.id,
                            format!(
                                "unknown field `{field}` of fact.resolves (it has: intent, token)"
                            ),
                        ),
                    },
                    Ty::Map | Ty::Dyn => Ty::Dyn,
                    other => self.err(
                        e.id,
                        format!("type error: a {} has no field `{field}`", other.name()),
                    ),
                };
                (if sel.test { Ty::Bool } else { ft }, c + 1)
            }
            Ast::Call(call) => self.call(e.id, call),
            Ast::List(list) => {
                let mut cost = 1;
                let mut elem: Option<Ty> = None;
                for el in &list.elements {
                    let (t, c) = self.check(el);
                    cost += c;
                    elem = Some(match elem {
                        None => t,
                        Some(prev) if prev == t => prev,
                        Some(_) => Ty::Dyn,
                    });
                }
                (Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))), cost)
            }
            Ast::Map(map) => {
                let mut cost = 1u64;
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                        let (key, key_cost) = self.check(&me.key);
                        if key.known() && key != Ty::Str {
                            self.err(
                                me.key.id,
                                format!(
                                    "type error: map keys must be strings (records are JSON), \
                                     found {}",
                                    key.name()
                                ),
                            );
                        }
                        cost = cost
                            .saturating_add(key_cost)
                            .saturating_add(self.check(&me.value).1);
                    }
                }
                (Ty::Map, cost)
            }
            Ast::Struct(s) => {
                let t = self.err(
                    e.id,
                    format!(
                        "message literals (`{}{{…}}`) are not available in contracts",
                        s.type_name
                    ),
                );
                (t, 1)
            }
            Ast::Comprehension(comp) => {
                let (range, range_cost) = self.check(&comp.iter_range);
                let elem = match &range {
                    Ty::List(t) => (**t).clone(),
                    Ty::Map | Ty::Dyn => Ty::Dyn,
                    other => self.err(
                        comp.iter_range.id,
                        format!("type error: cannot iterate over a {}", other.name()),
                    ),
                };
                let (accu, init_cost) = self.check(&comp.accu_init);
                // map() and filter() build a list in iteration order; over a JSON object
                // that order is a hash map's, which would make the result depend on the
                // process. Only lists the checker knows to be lists may be mapped.
                if matches!(accu, Ty::List(_)) && !matches!(range, Ty::List(_)) {
                    self.err(
                        comp.iter_range.id,
                        format!(
                            "map() and filter() need a value known to be a list (this is {}): \
                             over a JSON object their order would not be deterministic; \
                             use all(), exists() or exists_one()",
                            range.name()
                        ),
                    );
                }
                let depth = self.vars.len();
                self.vars.push((comp.accu_var.clone(), accu));
                self.vars.push((comp.iter_var.clone(), elem));
                if let Some(v2) = &comp.iter_var2 {
                    self.vars.push((v2.clone(), Ty::Dyn));
                }
                let (_, cond_cost) = self.check(&comp.loop_cond);
                let (_, step_cost) = self.check(&comp.loop_step);
                let (result, result_cost) = self.check(&comp.result);
                self.vars.truncate(depth);
                let per_item = cond_cost.saturating_add(step_cost);
                let cost = range_cost
                    .saturating_add(init_cost)
                    .saturating_add(result_cost)
                    .saturating_add(per_item.saturating_mul(self.list_bound));
                (result, cost)
            }
        }
    }

    fn call(&mut self, id: u64, call: &cel::common::ast::CallExpr) -> (Ty, u64) {
        let mut cost = 1u64;
        let target = call.target.as_ref().map(|t| {
            let (ty, c) = self.check(t);
            cost = cost.saturating_add(c);
            ty
        });
        let args: Vec<Ty> = call
            .args
            .iter()
            .map(|a| {
                let (ty, c) = self.check(a);
                cost = cost.saturating_add(c);
                ty
            })
            .collect();
        let name = call.func_name.as_str();
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Ty::Dyn);
        // Operations that walk or copy a string or a list cost its length, not one
        // step: `+` (a copy of both), a comparison (up to the shorter one: lengths
        // that differ end `==` at once), `in` over a list, `contains`, `startsWith`,
        // `endsWith` and `size` of a string (counts characters).
        let seq = |t: &Ty| matches!(t, Ty::Str | Ty::Bytes | Ty::List(_) | Ty::Dyn);
        let len = |e: Option<&IdedExpr>| e.map_or(0, |e| self.len_bound(e));
        // `@result + [x]`, the step of map() and filter() (`@result` cannot be
        // written in CEL source), appends in place in the `cel` crate: only `[x]`.
        let accu_step = name == operators::ADD
            && call
                .args
                .first()
                .is_some_and(|a| matches!(&a.expr, Ast::Ident(n) if n.starts_with('@')));
        let walk = match name {
            operators::ADD if accu_step => len(call.args.get(1)),
            operators::ADD if args.iter().any(seq) => {
                len(call.args.first()).saturating_add(len(call.args.get(1)))
            }
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
                if args.iter().all(seq) =>
            {
                len(call.args.first()).min(len(call.args.get(1)))
            }
            operators::IN if matches!(arg(1), Ty::List(_) | Ty::Dyn) => len(call.args.get(1)),
            "contains" | "startsWith" | "endsWith" => {
                len(call.target.as_deref()).saturating_add(len(call.args.first()))
            }
            "size" => {
                let (t, e) = match call.target.as_deref() {
                    Some(t) => (target.clone().unwrap_or(Ty::Dyn), Some(t)),
                    None => (arg(0), call.args.first()),
                };
                if matches!(t, Ty::Str | Ty::Dyn) {
                    len(e)
                } else {
                    0
                }
            }
            _ => 0,
        };
        cost = cost.saturating_add(walk);
        let ty = match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT => {
                for (i, a) in args.iter().enumerate() {
                    if !matches!(a, Ty::Bool | Ty::Dyn) {
                        self.err(
                            call.args[i].id,
                            format!(
                                "type error: a logical operator needs bool operands, found {}",
                                a.name()
                            ),
                        );
                    }
                }
                Ty::Bool
            }
            operators::NOT_STRICTLY_FALSE => Ty::Bool,
            operators::EQUALS | operators::NOT_EQUALS => {
                let (a, b) = (arg(0), arg(1));
                if !a.equatable_with(&b) {
                    self.err(
                        id,
                        format!("type error: cannot compare {} with {}", a.name(), b.name()),
                    );
                }
                Ty::Bool
            }
            operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => {
                let (a, b) = (arg(0), arg(1));
                if !a.ordered_with(&b) {
                    self.err(
                        id,
                        format!("type error: cannot order {} against {}", a.name(), b.name()),
                    );
                }
                Ty::Bool
            }
            operators::ADD => match (arg(0), arg(1)) {
                (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
                (a, b)
                    if a == b
                        && (a.numeric() || matches!(a, Ty::Str | Ty::Bytes | Ty::List(_))) =>
                {
                    a
                }
                (Ty::List(_), Ty::List(_)) => Ty::List(Box::new(Ty::Dyn)),
                (a, b) => self.err(
                    id,
                    format!("type error: cannot add {} and {}", a.name(), b.name()),
                ),
            },
            operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO => {
                match (arg(0), arg(1)) {
                    (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
                    (a, b) if a == b && a.numeric() => a,
                    (a, b) => self.err(
                        id,
                        format!(
                            "type error: arithmetic needs two numbers of one type, found {} and {}",
                            a.name(),
                            b.name()
                        ),
                    ),
                }
            }
            operators::NEGATE => match arg(0) {
                t if t.numeric() || !t.known() => t,
                t => self.err(id, format!("type error: cannot negate a {}", t.name())),
            },
            operators::CONDITIONAL => {
                let c = arg(0);
                if !matches!(c, Ty::Bool | Ty::Dyn) {
                    self.err(
                        call.args[0].id,
                        format!("type error: a condition must be a bool, found {}", c.name()),
                    );
                }
                let (a, b) = (arg(1), arg(2));
                if a == b { a } else { Ty::Dyn }
            }
            operators::INDEX | operators::OPT_INDEX => match (arg(0), arg(1)) {
                (Ty::List(t), i) => {
                    if !matches!(i, Ty::Int | Ty::Uint | Ty::Dyn) {
                        self.err(
                            id,
                            format!(
                                "type error: a list index must be an integer, found {}",
                                i.name()
                            ),
                        );
                    }
                    *t
                }
                (Ty::Map | Ty::Dyn, _) => Ty::Dyn,
                (Ty::Fact, _) => self.err(
                    id,
                    "index a Fact by field instead: fact.body, fact.topic, …".into(),
                ),
                (t, _) => self.err(id, format!("type error: cannot index a {}", t.name())),
            },
            operators::IN => {
                let c = arg(1);
                if !matches!(c, Ty::List(_) | Ty::Map | Ty::Dyn) {
                    self.err(
                        id,
                        format!(
                            "type error: `in` needs a list or a map on its right, found {}",
                            c.name()
                        ),
                    );
                }
                Ty::Bool
            }
            "size" => Ty::Int,
            "contains" | "startsWith" | "endsWith" => {
                if let Some(t) = &target
                    && !matches!(t, Ty::Str | Ty::Dyn)
                {
                    self.err(
                        id,
                        format!(
                            "type error: {name}() applies to a string, not a {}",
                            t.name()
                        ),
                    );
                }
                Ty::Bool
            }
            "int" => Ty::Int,
            "uint" => Ty::Uint,
            "double" => Ty::Double,
            "string" => Ty::Str,
            "bool" => Ty::Bool,
            "bytes" => Ty::Bytes,
            "type" => Ty::Type,
            "dyn" | "max" | "min" => Ty::Dyn,
            _ => self.err(
                id,
                format!(
                    "unknown function `{name}` (available: size, contains, startsWith, endsWith, \
                     int, uint, double, string, bool, bytes, type, dyn, max, min, has, all, \
                     exists, exists_one, map, filter)"
                ),
            ),
        };
        (ty, cost)
    }
}

fn is_type_name(name: &str) -> bool {
    matches!(
        name,
        "bool"
            | "bytes"
            | "double"
            | "int"
            | "list"
            | "map"
            | "null_type"
            | "string"
            | "type"
            | "uint"
    )
}

/// A JSON value as CEL sees it (integers stay integers).
pub(crate) fn json_to_cel(v: &Json) -> Cel {
    match v {
        Json::Null => Cel::Null,
        Json::Bool(b) => Cel::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => match n.as_u64() {
                Some(u) => Cel::UInt(u),
                None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Json::String(s) => Cel::String(Arc::new(s.clone())),
        Json::Array(a) => Cel::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(o) => {
            let map: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// A CEL value as JSON, for a selector body; an error for what records cannot hold
/// (doubles, bytes, types, functions, maps with keys other than strings).
pub(crate) fn cel_to_json(v: &Cel) -> Result<Json, String> {
    Ok(match v {
        Cel::Null => Json::Null,
        Cel::Bool(b) => Json::Bool(*b),
        Cel::Int(i) => Json::from(*i),
        Cel::UInt(u) => Json::from(*u),
        Cel::String(s) => Json::String(s.as_str().to_owned()),
        Cel::List(l) => Json::Array(l.iter().map(cel_to_json).collect::<Result<_, _>>()?),
        Cel::Map(m) => {
            // Only string keys: `1`, `1u`, `'1'` would all become the JSON key "1", and
            // which of them won would follow the map's (per-process random) order. Keys
            // are put in sorted order so the result is the same whatever JSON's map.
            let mut sorted = std::collections::BTreeMap::new();
            for (k, v) in m.map.iter() {
                // (Which other key is found first follows that order too: name none.)
                let Key::String(key) = k else {
                    return Err("a map key must be a string to go into a record \
                                (records are JSON)"
                        .into());
                };
                sorted.insert(key.as_str(), v);
            }
            let mut out = serde_json::Map::new();
            for (k, v) in sorted {
                out.insert(k.to_owned(), cel_to_json(v)?);
            }
            Json::Object(out)
        }
        other => return Err(format!("a {:?} cannot go into a record", other.type_of())),
    })
}

/// A scalar CEL value as text (interpolation and group keys); `None` otherwise.
pub(crate) fn scalar_text(v: &Cel) -> Option<String> {
    match v {
        Cel::String(s) => Some(s.as_str().to_owned()),
        Cel::Int(i) => Some(i.to_string()),
        Cel::UInt(u) => Some(u.to_string()),
        Cel::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A Fact as the CEL map rules read.
pub(crate) fn fact_to_cel(hash: &FihHash, fact: &nexus_core::Fact, at: u64) -> Cel {
    let s = |t: String| Cel::String(Arc::new(t));
    let mut m: HashMap<Key, Cel> = HashMap::with_capacity(8);
    let key = |k: &str| Key::String(Arc::new(k.to_owned()));
    m.insert(key("hash"), s(hash.to_hex()));
    m.insert(key("topic"), s(fact.topic.as_str().to_owned()));
    m.insert(key("body"), json_to_cel(&fact.body));
    m.insert(key("author"), s(fact.author.to_string()));
    m.insert(key("time"), Cel::Int(fact.time as i64));
    m.insert(key("at"), Cel::Int(at as i64));
    m.insert(
        key("parents"),
        Cel::List(Arc::new(
            fact.parents.iter().map(|p| s(p.to_hex())).collect(),
        )),
    );
    if let Some(r) = &fact.resolves {
        let mut rm: HashMap<Key, Cel> = HashMap::with_capacity(2);
        rm.insert(key("intent"), s(r.intent.to_hex()));
        rm.insert(key("token"), Cel::Int(r.token as i64));
        m.insert(key("resolves"), Cel::Map(Map { map: Arc::new(rm) }));
    }
    Cel::Map(Map { map: Arc::new(m) })
}
