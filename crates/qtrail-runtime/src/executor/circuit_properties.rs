//! Property tests of the OpenQASM front end: random programs, nested gate definitions included,
//! get a clear error or a bounded circuit, never a panic, a hang or a blow-up.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::circuit::{self, CircuitError, MAX_CLBITS, MAX_OPERATIONS, MAX_QUBITS};

/// Longest any one program may take to be refused or compiled, however it expands: a bound
/// generous enough for a debug build on a busy machine, small next to a blow-up.
const PARSE_BUDGET: Duration = Duration::from_secs(20);

/// An angle expression: numbers, pi, a parameter, and a little arithmetic.
fn angle(params: usize) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("pi".to_owned()),
        (0u32..1000).prop_map(|n| n.to_string()),
        (0.0f64..10.0).prop_map(|x| format!("{x:.3}")),
        (0..params.max(1)).prop_map(move |i| if params == 0 { "0".to_owned() } else { format!("p{i}") }),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), prop::sample::select(vec!["+", "-", "*", "/", "^"]), inner.clone())
                .prop_map(|(a, op, b)| format!("({a}{op}{b})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.prop_map(|a| format!("sin({a})")),
        ]
    })
    .boxed()
}

/// One statement inside gate `index`'s body, over its arguments `a` and `b`, applying only
/// gates defined before it (or, rarely, itself or an unknown one, to be refused).
fn body_statement(index: usize) -> BoxedStrategy<String> {
    prop_oneof![
        40 => (0..index.max(1)).prop_map(move |callee| if index == 0 { "U(0,0,0) a;".to_owned() } else { format!("g{callee}(p0) a, b;") }),
        20 => angle(1).prop_map(|theta| format!("U({theta}, 0, p0) b;")),
        20 => Just("CX a, b;".to_owned()),
        10 => Just("barrier a, b;".to_owned()),
        1 => Just(format!("g{index}(p0) a, b;")),
        1 => Just("nope(p0) a, b;".to_owned()),
    ]
    .boxed()
}

/// A gate definition `g<index>(p0) a, b { ... }`.
fn definition(index: usize) -> BoxedStrategy<String> {
    prop::collection::vec(body_statement(index), 1..5)
        .prop_map(move |body| format!("gate g{index}(p0) a, b {{ {} }}\n", body.join(" ")))
        .boxed()
}

/// A top-level statement over `qreg q[qubits]; qreg r[qubits]; creg c[qubits];`.
fn statement(gates: usize, qubits: u64) -> BoxedStrategy<String> {
    // Now and then one past the end, to be refused.
    let index = 0..qubits + u64::from(qubits.is_multiple_of(5));
    prop_oneof![
        4 => (0..gates.max(1), angle(0)).prop_map(move |(g, theta)| if gates == 0 { "barrier q;".to_owned() } else { format!("g{g}({theta}) q, r;") }),
        2 => (0..gates.max(1), index.clone(), index.clone()).prop_map(move |(g, i, j)| if gates == 0 { "CX q, r;".to_owned() } else { format!("g{g}(1) q[{i}], r[{j}];") }),
        1 => index.clone().prop_map(|i| format!("measure q[{i}] -> c[{i}];")),
        1 => Just("measure q -> c;".to_owned()),
        1 => Just("reset r;".to_owned()),
        1 => Just("barrier q, r;".to_owned()),
        1 => (0u64..8, 0..gates.max(1)).prop_map(move |(v, g)| if gates == 0 { format!("if (c=={v}) U(0,0,0) q;") } else { format!("if (c=={v}) g{g}(0) q, r;") }),
        1 => Just("h q;".to_owned()),
    ]
    .boxed()
}

/// A whole program: registers (now and then too many), up to 12 nested gate definitions, statements, and sometimes
/// the standard library.
fn program() -> impl Strategy<Value = String> {
    (0usize..12, 1u64..12, any::<bool>()).prop_flat_map(|(gates, qubits, include)| {
        let definitions: Vec<BoxedStrategy<String>> = (0..gates).map(definition).collect();
        (definitions, prop::collection::vec(statement(gates, qubits), 0..12)).prop_map(move |(defs, stmts)| {
            let header = if include { "OPENQASM 2.0;\ninclude \"qelib1.inc\";\n" } else { "OPENQASM 2.0;\n" };
            format!(
                "{header}qreg q[{qubits}];\nqreg r[{qubits}];\ncreg c[{qubits}];\n{}{}\n",
                defs.concat(),
                stmts.join("\n")
            )
        })
    })
}

/// Asserts what every outcome must be: a bounded circuit, or an error a caller can read.
fn assert_bounded(source: &str, outcome: &Result<circuit::Circuit, CircuitError>, took: Duration) {
    assert!(took < PARSE_BUDGET, "took {took:?} for:\n{source}");
    match outcome {
        Ok(circuit) => {
            assert!(circuit.instructions.len() <= MAX_OPERATIONS);
            assert!(circuit.num_qubits as u64 <= MAX_QUBITS && circuit.num_clbits as u64 <= MAX_CLBITS);
        }
        Err(err) => {
            let message = err.to_string();
            assert!(!message.is_empty() && !message.ends_with('.'), "{message:?}");
            assert!(!message.starts_with(char::is_uppercase), "{message:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_programs_compile_bounded_or_fail_clearly(source in program()) {
        let started = Instant::now();
        let outcome = circuit::parse(&source);
        assert_bounded(&source, &outcome, started.elapsed());
    }

    #[test]
    fn nested_definitions_are_refused_by_their_expanded_size(levels in 1usize..80, fanout in 1usize..5, width in 1u64..21) {
        let mut source = format!("OPENQASM 2.0;\nqreg q[{width}];\ngate g0 a {{ U(0,0,0) a; barrier a; }}\n");
        for level in 1..=levels {
            let calls = format!("g{} a; ", level - 1).repeat(fanout);
            source.push_str(&format!("gate g{level} a {{ {calls}}}\n"));
        }
        source.push_str(&format!("g{levels} q;\n"));
        // Each g0 is two operations, each level multiplies by the fan-out, the broadcast by the width.
        let expanded = (fanout as u128).saturating_pow(levels as u32).saturating_mul(2).saturating_mul(u128::from(width));
        let started = Instant::now();
        let outcome = circuit::parse(&source);
        assert_bounded(&source, &outcome, started.elapsed());
        if expanded > MAX_OPERATIONS as u128 {
            prop_assert_eq!(outcome.unwrap_err(), CircuitError::TooManyOperations);
        } else {
            // Barriers are counted but not written.
            prop_assert_eq!(outcome.unwrap().instructions.len() as u128, expanded / 2);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(source in "(OPENQASM 2.0;\n)?[ -~\n]{0,400}") {
        let started = Instant::now();
        let outcome = circuit::parse(&source);
        assert_bounded(&source, &outcome, started.elapsed());
        prop_assert_ne!(outcome.err(), Some(CircuitError::Unparsable), "{}", source);
    }
}
