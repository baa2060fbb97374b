//! OpenQASM 2 programs turned into circuits the simulator runs.
//!
//! The `openqasm` crate parses and type-checks the source and linearizes every gate down to the
//! two primitives `U` and `CX` (through its `GateWriter` trait), so the simulator needs only U,
//! CX, measure, reset and classically conditioned versions of them. Includes are sandboxed: only
//! `qelib1.inc` resolves, from a copy compiled into the binary; a program can never read a file.
//! Sizes are checked before anything is allocated for them.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use ariadne::Span as _;
use openqasm::ast::{Decl, FileSpan, Program, Span, Stmt};
use openqasm::parser::{FilePolicy, FileResult, ParseError, Parser, SourceCache};
use openqasm::translate::{GateWriter, Linearize, LinearizeError, ProgramVisitor, Value};
use openqasm::typing::TypeError;

use super::compiling::COMPILING;
use super::expansion::check_expansion;
#[cfg(test)]
use super::expansion::expanded_size;

/// Most qubits a circuit may use: 2^20 amplitudes are 16 MiB of state.
pub const MAX_QUBITS: u64 = 20;
/// Most classical bits: results are keyed by one bit string per shot.
pub const MAX_CLBITS: u64 = 64;
/// Most operations a program may expand to: every gate application, measure, reset and barrier,
/// multiplied through gate definitions and register broadcasts. Checked on the syntax tree
/// before anything is expanded, since nested gate definitions expand exponentially.
pub const MAX_OPERATIONS: usize = 1_000_000;
/// Most terms of angle expressions a program may evaluate as it expands, each counted every time
/// it is evaluated: a long expression inside a gate applied half a million times costs as much
/// CPU as many millions of operations. Checked with [`MAX_OPERATIONS`].
pub const MAX_EXPRESSION_TERMS: u64 = 16_000_000;
/// Largest OpenQASM source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Most operators and parentheses in one statement. The parser, type checker and linearizer
/// recurse once per nesting level of an expression; this keeps that depth small.
pub const MAX_STATEMENT_OPERATORS: usize = 256;
/// Stack of the thread that parses: gate definitions calling each other also recurse, once per
/// level, and a stack overflow would abort the whole process.
const PARSE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The standard gate library (Qiskit's `qelib1.inc`, Apache-2.0), the only includable file.
const QELIB1: &str = include_str!("qelib1.inc");
/// Name given to the caller's source, so errors in it can be told from errors in an include.
const SOURCE_NAME: &str = "program.qasm";

/// A primitive operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operation {
    /// The single-qubit rotation `U(theta, phi, lambda)`.
    U {
        /// Rotation angles.
        theta: f64,
        /// Rotation angles.
        phi: f64,
        /// Rotation angles.
        lambda: f64,
        /// Qubit acted on.
        qubit: usize,
    },
    /// Controlled NOT.
    Cx {
        /// Control qubit.
        control: usize,
        /// Target qubit.
        target: usize,
    },
    /// Measures a qubit into a classical bit.
    Measure {
        /// Qubit measured.
        qubit: usize,
        /// Bit written.
        clbit: usize,
    },
    /// Resets a qubit to |0>.
    Reset {
        /// Qubit reset.
        qubit: usize,
    },
}

/// `if (creg == value)`: the bits `offset..offset + width` read as an integer, bit 0 lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// First classical bit of the register.
    pub offset: usize,
    /// Bits in the register.
    pub width: usize,
    /// Value compared with.
    pub value: u64,
}

/// An operation and the condition it runs under, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instruction {
    /// What to do.
    pub operation: Operation,
    /// When to do it.
    pub condition: Option<Condition>,
}

/// A linearized circuit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Circuit {
    /// Qubits used.
    pub num_qubits: usize,
    /// Classical bits used.
    pub num_clbits: usize,
    /// The operations in program order.
    pub instructions: Vec<Instruction>,
}

/// Why a source is not a circuit the simulator can run. Messages are lowercase and say where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircuitError {
    /// The source is empty.
    #[error("empty program")]
    Empty,
    /// The source is too large.
    #[error("program is {0} bytes, over the limit of {MAX_SOURCE_BYTES}")]
    TooLarge(usize),
    /// The source does not parse or type-check.
    #[error("{0}")]
    Invalid(String),
    /// The circuit needs more qubits than the simulator has.
    #[error("circuit uses {0} qubits, the simulator limit is {MAX_QUBITS}")]
    TooManyQubits(u64),
    /// The circuit has more classical bits than results can hold.
    #[error("circuit uses {0} classical bits, the limit is {MAX_CLBITS}")]
    TooManyClbits(u64),
    /// The circuit expands to too many operations.
    #[error("expanded size of the program exceeds the limit of {MAX_OPERATIONS} operations")]
    TooManyOperations,
    /// The circuit evaluates too many expression terms as it expands.
    #[error("expanded program evaluates more than {MAX_EXPRESSION_TERMS} terms of angle expressions")]
    TooManyTerms,
    /// The circuit uses a gate with no definition.
    #[error("opaque gate `{0}` cannot be simulated")]
    Opaque(String),
    /// A statement nests too deeply.
    #[error("line {0}: statement has more than {MAX_STATEMENT_OPERATORS} operators")]
    TooComplex(usize),
    /// The parser failed in a way it does not report (it panicked).
    #[error("program cannot be parsed")]
    Unparsable,
}

/// Parses, type-checks and linearizes an OpenQASM 2 source.
///
/// # Errors
/// [`CircuitError`] naming what is wrong and, where the parser knows it, the line and column.
pub fn parse(source: &str) -> Result<Circuit, CircuitError> {
    if source.trim().is_empty() {
        return Err(CircuitError::Empty);
    }
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CircuitError::TooLarge(source.len()));
    }
    check_complexity(source)?;
    let _slot = COMPILING.enter();
    let owned = source.to_owned();
    let parser = std::thread::Builder::new()
        .name("qasm-parse".to_owned())
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || parse_checked(&owned))
        .map_err(|_| CircuitError::Unparsable)?;
    // A panic inside the openqasm crate ends only its thread: the program is refused.
    parser.join().unwrap_or(Err(CircuitError::Unparsable))
}

/// Refuses statements with more than [`MAX_STATEMENT_OPERATORS`] operators and parentheses.
fn check_complexity(source: &str) -> Result<(), CircuitError> {
    let mut line = 1;
    let mut statement_line = 1;
    let mut operators = 0;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '/' if chars.peek() == Some(&'/') => {
                // A comment runs to the end of the line.
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                operators = 0;
                statement_line = line;
            }
            '+' | '-' | '*' | '/' | '^' | '(' => {
                if operators == 0 {
                    statement_line = line;
                }
                operators += 1;
                if operators > MAX_STATEMENT_OPERATORS {
                    return Err(CircuitError::TooComplex(statement_line));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_checked(source: &str) -> Result<Circuit, CircuitError> {
    let mut cache = SourceCache::new();
    let program = parse_program(&mut cache, source)?;
    let (num_qubits, num_clbits) = register_sizes(&program)?;
    if let Err(errors) = program.type_check() {
        let first = errors.first().map(|err| describe_type_error(&cache, source, err));
        return Err(CircuitError::Invalid(first.unwrap_or_else(|| "type error".to_owned())));
    }
    check_expansion(&program)?;
    let mut circuit = Circuit { num_qubits, num_clbits, instructions: Vec::new() };
    let condition = Rc::new(Cell::new(None));
    let writer = Writer { circuit: &mut circuit, condition: condition.clone() };
    let mut linearize =
        Linearizer { inner: Linearize::new(writer, usize::MAX), cregs: creg_layout(&program), condition };
    linearize.visit_program(&program).map_err(|err| match err.kind {
        openqasm::translate::LinearizeErrorKind::WriterError { error } => match error.downcast::<CircuitError>() {
            Ok(circuit_error) => *circuit_error,
            Err(other) => CircuitError::Invalid(other.to_string()),
        },
        kind => CircuitError::Invalid(kind.to_string()),
    })?;
    drop(linearize);
    Ok(circuit)
}

fn parse_program(cache: &mut SourceCache, source: &str) -> Result<Program, CircuitError> {
    let mut resolve = |path: &Path| {
        if path == Path::new("qelib1.inc") {
            FileResult::Success(QELIB1.to_owned())
        } else {
            FileResult::Error(Box::new(std::io::Error::new(std::io::ErrorKind::NotFound, "not includable")))
        }
    };
    let mut parser = Parser::new(cache).with_file_policy(FilePolicy::Custom(&mut resolve));
    parser.parse_source(source.to_owned(), Some(SOURCE_NAME));
    match parser.done() {
        Ok(program) => Ok(program),
        Err(errors) => {
            let message = errors.first().map(|err| describe_parse_error(cache, source, err));
            Err(CircuitError::Invalid(message.unwrap_or_else(|| "syntax error".to_owned())))
        }
    }
}

/// Sums the register sizes from the declarations, before the linearizer allocates anything
/// per qubit.
fn register_sizes(program: &Program) -> Result<(usize, usize), CircuitError> {
    let mut qubits: u64 = 0;
    let mut clbits: u64 = 0;
    for decl in &program.decls {
        match &*decl.inner {
            Decl::QReg { reg } => qubits = qubits.saturating_add(reg.index.unwrap_or(1)),
            Decl::CReg { reg } => clbits = clbits.saturating_add(reg.index.unwrap_or(1)),
            Decl::Include { .. } | Decl::Def { .. } | Decl::Stmt(_) => {}
        }
    }
    if qubits > MAX_QUBITS {
        return Err(CircuitError::TooManyQubits(qubits));
    }
    if clbits > MAX_CLBITS {
        return Err(CircuitError::TooManyClbits(clbits));
    }
    // Both are at most 64 here.
    Ok((qubits as usize, clbits as usize))
}

/// Returns where each classical register starts and how wide it is: registers are laid out in
/// declaration order, as the linearizer lays them out.
fn creg_layout(program: &Program) -> HashMap<String, (usize, usize)> {
    let mut layout = HashMap::new();
    let mut next = 0;
    for decl in &program.decls {
        if let Decl::CReg { reg } = &*decl.inner {
            // Sizes were checked against MAX_CLBITS already.
            let width = reg.index.unwrap_or(1) as usize;
            layout.insert(reg.name.to_string(), (next, width));
            next += width;
        }
    }
    layout
}

/// Wraps the crate's linearizer to handle `if` statements itself: openqasm 0.1.2 looks the
/// condition register up among the quantum registers and panics on every `if`. The wrapper
/// sets the condition the writer attaches to operations, then lets the linearizer expand the
/// conditioned statement. Everything else goes to the linearizer unchanged.
struct Linearizer<'a> {
    inner: Linearize<Writer<'a>>,
    cregs: HashMap<String, (usize, usize)>,
    condition: Rc<Cell<Option<Condition>>>,
}

impl ProgramVisitor for Linearizer<'_> {
    type Error = LinearizeError;

    fn visit_decl(&mut self, decl: &Span<Decl>) -> Result<(), LinearizeError> {
        let Decl::Stmt(stmt) = &*decl.inner else {
            return self.inner.visit_decl(decl);
        };
        let Stmt::Conditional { reg, val, then } = &*stmt.inner else {
            return self.inner.visit_decl(decl);
        };
        // The type checker has made sure the register exists; an unknown one matches nothing.
        let (offset, width) = self.cregs.get(&reg.name.to_string()).copied().unwrap_or((0, 0));
        self.condition.set(Some(Condition { offset, width, value: **val }));
        let result = self.inner.visit_stmt(then);
        self.condition.set(None);
        result
    }
}

/// Returns "line L, column C: " for a span in the caller's source, or "in <file>: " for one in
/// an include.
fn position(cache: &SourceCache, source: &str, span: FileSpan) -> String {
    let in_source = cache.get_path(span).is_some_and(|path| path == Path::new(SOURCE_NAME));
    if !in_source {
        let file = cache.get_path(span).map(|path| path.display().to_string()).unwrap_or_default();
        return format!("in {file}: ");
    }
    let before = source.get(..span.start()).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
    format!("line {line}, column {column}: ")
}

fn describe_parse_error(cache: &SourceCache, source: &str, err: &ParseError) -> String {
    match err {
        ParseError::InvalidToken { span } => format!("{}invalid token", position(cache, source, *span)),
        ParseError::UnexpectedToken { expected, span, .. } => format!(
            "{}unexpected `{}`, expected one of {}",
            position(cache, source, *span),
            cache.get_source(*span),
            expected.join(", ")
        ),
        ParseError::UnexpectedEOF { expected, span } => {
            format!(
                "{}unexpected end of program, expected one of {}",
                position(cache, source, *span),
                expected.join(", ")
            )
        }
        ParseError::ReadUnableSandboxed { path, from }
        | ParseError::ReadUnableFilesystem { path, from, .. }
        | ParseError::ReadUnableCustom { path, from, .. } => {
            let at = from.map(|span| position(cache, source, span)).unwrap_or_default();
            format!("{at}cannot include `{}`: only qelib1.inc can be included", path.display())
        }
    }
}

fn describe_type_error(cache: &SourceCache, source: &str, err: &TypeError) -> String {
    let (span, detail) = match err {
        TypeError::RedefinedGate { name, .. } => (name.span, format!("gate `{}` is defined twice", name.inner)),
        TypeError::RedefinedArgument { name, .. } => (name.span, format!("argument `{}` is repeated", name.inner)),
        TypeError::RedefinedParameter { name, .. } => (name.span, format!("parameter `{}` is repeated", name.inner)),
        TypeError::RecursiveDefinition { cycle } => match cycle.first() {
            Some((span, _)) => (*span, "gate definitions are recursive".to_owned()),
            None => return "gate definitions are recursive".to_owned(),
        },
        TypeError::ZeroSizeRegister { reg, .. } => (*reg, "register of size zero".to_owned()),
        TypeError::RedefinedRegister { reg, .. } => (reg.span, format!("register `{}` is declared twice", reg.name)),
        TypeError::UndefinedParameter { name, span, .. } => (*span, format!("undefined parameter `{name}`")),
        TypeError::InvalidComparisonSize { value, reg_size, .. } => {
            (*value, format!("value does not fit a {reg_size}-bit register"))
        }
        TypeError::WrongArgumentArity { stmt, name, arity, actual, .. } => {
            (*stmt, format!("gate `{name}` takes {arity} arguments, got {actual}"))
        }
        TypeError::WrongParameterArity { stmt, name, arity, actual, .. } => {
            (*stmt, format!("gate `{name}` takes {arity} parameters, got {actual}"))
        }
        TypeError::UndefinedGate { name, .. } => (name.span, format!("unknown gate `{}`", name.inner)),
        TypeError::WrongOperandSize { span, size, match_size, .. } => {
            (*span, format!("operand of size {size} does not match size {match_size}"))
        }
        TypeError::InvalidRegisterIndex { name, index, size, reg, .. } => {
            (*reg, format!("index {index} is out of range for `{name}` of size {size}"))
        }
        TypeError::WrongRegisterType { name, reg, classical, .. } => {
            let expected = if *classical { "classical" } else { "quantum" };
            (*reg, format!("`{name}` is not a {expected} register"))
        }
        TypeError::UndefinedRegister { name, reg, .. } => (*reg, format!("undefined register `{name}`")),
    };
    format!("{}{detail}", position(cache, source, span))
}

/// Collects the linearized operations into a circuit it borrows.
struct Writer<'a> {
    circuit: &'a mut Circuit,
    /// The condition of the statement being expanded, set by [`Linearizer`].
    condition: Rc<Cell<Option<Condition>>>,
}

impl Writer<'_> {
    fn push(&mut self, operation: Operation) -> Result<(), CircuitError> {
        if self.circuit.instructions.len() >= MAX_OPERATIONS {
            return Err(CircuitError::TooManyOperations);
        }
        self.circuit.instructions.push(Instruction { operation, condition: self.condition.get() });
        Ok(())
    }
}

impl GateWriter for Writer<'_> {
    type Error = CircuitError;

    fn initialize(
        &mut self,
        _qubits: &[openqasm::ast::Symbol],
        _bits: &[openqasm::ast::Symbol],
    ) -> Result<(), CircuitError> {
        Ok(())
    }

    fn write_cx(&mut self, control: usize, target: usize) -> Result<(), CircuitError> {
        self.push(Operation::Cx { control, target })
    }

    fn write_u(&mut self, theta: Value, phi: Value, lambda: Value, qubit: usize) -> Result<(), CircuitError> {
        self.push(Operation::U {
            theta: f64::from(theta.into_float()),
            phi: f64::from(phi.into_float()),
            lambda: f64::from(lambda.into_float()),
            qubit,
        })
    }

    fn write_opaque(
        &mut self,
        name: &openqasm::ast::Symbol,
        _params: &[Value],
        _args: &[usize],
    ) -> Result<(), CircuitError> {
        Err(CircuitError::Opaque(name.to_string()))
    }

    fn write_barrier(&mut self, _qubits: &[usize]) -> Result<(), CircuitError> {
        // A barrier only constrains optimisation; the simulator has nothing to do.
        Ok(())
    }

    fn write_measure(&mut self, qubit: usize, clbit: usize) -> Result<(), CircuitError> {
        self.push(Operation::Measure { qubit, clbit })
    }

    fn write_reset(&mut self, qubit: usize) -> Result<(), CircuitError> {
        self.push(Operation::Reset { qubit })
    }

    // Conditions are set by `Linearizer`; the linearizer's own calls never arrive (see there).
    fn start_conditional(&mut self, offset: usize, width: usize, value: u64) -> Result<(), CircuitError> {
        self.condition.set(Some(Condition { offset, width, value }));
        Ok(())
    }

    fn end_conditional(&mut self) -> Result<(), CircuitError> {
        self.condition.set(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
