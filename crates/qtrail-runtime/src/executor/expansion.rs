//! What a program expands to, computed on its syntax tree before anything is expanded.
//!
//! Nested gate definitions expand exponentially (`gate g1 a { g0 a; g0 a; }` … 48 levels is
//! 2^48 applications), so the expansion is bounded here, by counting, before the linearizer
//! expands a single gate: every gate application, measure, reset and barrier counts, multiplied
//! through definitions and register broadcasts, and so do the terms of angle expressions.

use std::collections::{HashMap, HashSet};

use openqasm::ast::{Decl, Expr, Program, Span, Stmt};

use super::circuit::{CircuitError, MAX_EXPRESSION_TERMS, MAX_OPERATIONS};

/// What a program or a gate expands to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cost {
    /// Operations: `U`, `CX`, measure, reset and barrier, one each.
    operations: u64,
    /// Terms of the angle expressions evaluated, each time they are evaluated.
    terms: u64,
}

impl Cost {
    fn plus(self, other: Cost) -> Cost {
        Cost {
            operations: self.operations.saturating_add(other.operations),
            terms: self.terms.saturating_add(other.terms),
        }
    }

    fn times(self, factor: u64) -> Cost {
        Cost { operations: self.operations.saturating_mul(factor), terms: self.terms.saturating_mul(factor) }
    }

    /// Most a cost can be: a recursion, refused by the type checker anyway.
    const MAX: Cost = Cost { operations: u64::MAX, terms: u64::MAX };
}

/// Refuses a program whose expansion is over [`MAX_OPERATIONS`] or [`MAX_EXPRESSION_TERMS`].
pub(super) fn check_expansion(program: &Program) -> Result<(), CircuitError> {
    let cost = expanded_cost(program);
    if cost.operations > MAX_OPERATIONS as u64 {
        return Err(CircuitError::TooManyOperations);
    }
    if cost.terms > MAX_EXPRESSION_TERMS {
        return Err(CircuitError::TooManyTerms);
    }
    Ok(())
}

/// Returns what the program expands to, computed on the syntax tree without expanding
/// anything: a gate definition costs the sum of its body's statements, a gate application costs
/// its definition (plus its own parameters) times its broadcast width, and `U`, `CX`, measure,
/// reset and barrier cost one operation each (plus their angles' terms). Saturates rather than
/// overflows, so a bomb of any depth is just "too large".
fn expanded_cost(program: &Program) -> Cost {
    let mut definitions: HashMap<&str, Option<&[Span<Stmt>]>> = HashMap::new();
    let mut registers: HashMap<&str, u64> = HashMap::new();
    for decl in &program.decls {
        match &*decl.inner {
            Decl::Def { name, body, .. } => {
                definitions.insert(name.as_str(), body.as_deref());
            }
            Decl::QReg { reg } | Decl::CReg { reg } => {
                registers.insert(reg.name.as_str(), reg.index.unwrap_or(1));
            }
            Decl::Include { .. } | Decl::Stmt(_) => {}
        }
    }
    let mut costs = GateCosts { definitions, known: HashMap::new() };
    let mut total = Cost::default();
    for decl in &program.decls {
        if let Decl::Stmt(stmt) = &*decl.inner {
            let width = broadcast_width(stmt, &registers);
            total = total.plus(costs.statement(stmt).times(width));
        }
    }
    total
}

/// Returns how many operations the program expands to (see [`expanded_cost`]).
#[cfg(test)]
pub(super) fn expanded_size(program: &Program) -> u64 {
    expanded_cost(program).operations
}

/// How many times a top-level statement applies: a whole-register operand broadcasts it over
/// every qubit (or bit) of the register.
fn broadcast_width(stmt: &Stmt, registers: &HashMap<&str, u64>) -> u64 {
    let operands: Vec<&Span<openqasm::ast::Reg>> = match stmt {
        Stmt::U { reg, .. } | Stmt::Reset { reg } => vec![reg],
        Stmt::CX { copy, xor } => vec![copy, xor],
        Stmt::Measure { from, to } => vec![from, to],
        Stmt::Gate { args, .. } => args.iter().collect(),
        // One barrier however many registers it names.
        Stmt::Barrier { .. } => Vec::new(),
        Stmt::Conditional { then, .. } => return broadcast_width(then, registers),
    };
    operands
        .iter()
        .filter(|operand| operand.index.is_none())
        .map(|operand| registers.get(operand.name.as_str()).copied().unwrap_or(1))
        .max()
        .unwrap_or(1)
}

/// Returns the number of terms in an expression. Its depth is bounded by
/// [`MAX_STATEMENT_OPERATORS`](super::circuit::MAX_STATEMENT_OPERATORS), and this runs on the parser's large stack.
fn terms(expr: &Expr) -> u64 {
    match expr {
        Expr::Pi | Expr::Real(_) | Expr::Int(_) | Expr::Var(_) => 1,
        Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) | Expr::Pow(a, b) => {
            1u64.saturating_add(terms(a)).saturating_add(terms(b))
        }
        Expr::Neg(a) | Expr::Sin(a) | Expr::Cos(a) | Expr::Tan(a) | Expr::Exp(a) | Expr::Ln(a) | Expr::Sqrt(a) => {
            1u64.saturating_add(terms(a))
        }
    }
}

/// Returns what a statement costs by itself, leaving out the gate it applies, if any.
fn own_cost(stmt: &Stmt) -> Cost {
    match stmt {
        Stmt::U { theta, phi, lambda, .. } => {
            Cost { operations: 1, terms: terms(theta).saturating_add(terms(phi)).saturating_add(terms(lambda)) }
        }
        Stmt::CX { .. } | Stmt::Measure { .. } | Stmt::Reset { .. } | Stmt::Barrier { .. } => {
            Cost { operations: 1, terms: 0 }
        }
        Stmt::Gate { params, .. } => {
            Cost { operations: 0, terms: params.iter().fold(0, |sum, param| sum.saturating_add(terms(param))) }
        }
        Stmt::Conditional { then, .. } => own_cost(then),
    }
}

/// Returns the gate a statement applies, if it applies a defined one rather than a primitive.
fn callee_of(stmt: &Stmt) -> Option<&str> {
    match stmt {
        Stmt::Gate { name, .. } => Some(name.as_str()),
        Stmt::Conditional { then, .. } => callee_of(then),
        Stmt::U { .. } | Stmt::CX { .. } | Stmt::Measure { .. } | Stmt::Reset { .. } | Stmt::Barrier { .. } => None,
    }
}

/// Expanded costs of gate definitions, each computed once.
struct GateCosts<'a> {
    /// Every definition by name; `None` for an opaque gate.
    definitions: HashMap<&'a str, Option<&'a [Span<Stmt>]>>,
    /// Costs computed so far.
    known: HashMap<&'a str, Cost>,
}

impl<'a> GateCosts<'a> {
    /// Returns what one application of `stmt` costs, inside a gate body or at the top level
    /// before broadcasting.
    fn statement(&mut self, stmt: &'a Stmt) -> Cost {
        let own = own_cost(stmt);
        match callee_of(stmt) {
            Some(callee) => own.plus(self.gate(callee)),
            None => own,
        }
    }

    /// Returns the expanded cost of one application of gate `name`. Walks the definitions with
    /// an explicit stack: a chain of thousands of definitions must not recurse as deep.
    fn gate(&mut self, name: &'a str) -> Cost {
        /// A definition being summed: its body, the next statement and the sum so far.
        struct Frame<'a> {
            name: &'a str,
            body: &'a [Span<Stmt>],
            next: usize,
            sum: Cost,
        }
        let mut stack: Vec<Frame<'a>> = Vec::new();
        let mut on_stack: HashSet<&'a str> = HashSet::new();
        let mut pending = Some(name);
        loop {
            if let Some(callee) = pending.take() {
                if let Some(&cost) = self.known.get(callee) {
                    match stack.last_mut() {
                        Some(frame) => frame.sum = frame.sum.plus(cost),
                        None => return cost,
                    }
                } else if on_stack.contains(callee) {
                    // Recursion; the type checker refuses it, so this only keeps the walk finite.
                    return Cost::MAX;
                } else {
                    match self.definitions.get(callee).copied().flatten() {
                        Some(body) => {
                            on_stack.insert(callee);
                            stack.push(Frame { name: callee, body, next: 0, sum: Cost::default() });
                        }
                        // Opaque or unknown: refused later, counted as one operation until then.
                        None => {
                            self.known.insert(callee, Cost { operations: 1, terms: 0 });
                            pending = Some(callee);
                        }
                    }
                    continue;
                }
            }
            let Some(frame) = stack.last_mut() else {
                return Cost::default();
            };
            let body = frame.body;
            let Some(stmt) = body.get(frame.next) else {
                let (done, cost) = (frame.name, frame.sum);
                stack.pop();
                on_stack.remove(done);
                self.known.insert(done, cost);
                pending = Some(done);
                continue;
            };
            frame.next += 1;
            frame.sum = frame.sum.plus(own_cost(stmt));
            pending = callee_of(stmt);
        }
    }
}
