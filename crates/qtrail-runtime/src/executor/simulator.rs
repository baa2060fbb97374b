//! A state-vector simulator for linearized circuits.
//!
//! Circuits whose measurements all come at the end (no reset, no condition, no gate on a qubit
//! after it was measured) are simulated once and the shots sampled from the final probabilities.
//! Any other circuit is simulated shot by shot, collapsing the state at each measurement. Both
//! draw from one seeded `StdRng`, so a seed fixes the counts. Counts are keyed by the classical
//! register as a bit string with bit 0 rightmost, as Qiskit prints them.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::circuit::{Circuit, Condition, Instruction, Operation};

/// Counts per bit string.
pub type Counts = BTreeMap<String, u32>;

/// The run was stopped before it finished (cancelled, too long, or shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("simulation interrupted")]
pub struct Interrupted;

/// How a run reports progress and learns that it should stop.
pub trait Observer {
    /// Returns true when the run should stop now.
    fn should_stop(&mut self) -> bool;
    /// Receives the counts after `shots_done` shots.
    fn progress(&mut self, shots_done: u32, counts: &Counts);
}

/// Amplitudes a simulated shot updates between two looks at whether to stop.
const CHECK_AMPLITUDES: usize = 1 << 18;

/// Runs `shots` shots of `circuit` with `seed`, reporting progress after each of up to
/// `progress_steps` equal parts of the shots.
///
/// # Errors
/// [`Interrupted`] when the observer asks to stop.
pub fn run(
    circuit: &Circuit,
    shots: u32,
    seed: u64,
    progress_steps: u32,
    observer: &mut dyn Observer,
) -> Result<Counts, Interrupted> {
    let mut rng = StdRng::seed_from_u64(seed);
    let step = shots.div_ceil(progress_steps.max(1)).max(1);
    let mut counts = Counts::new();
    let mut sampler = if measurements_are_terminal(circuit) {
        let mut state = StateVector::new(circuit.num_qubits);
        for instruction in &circuit.instructions {
            if observer.should_stop() {
                return Err(Interrupted);
            }
            if let Operation::U { .. } | Operation::Cx { .. } = instruction.operation {
                state.apply(instruction.operation);
            }
        }
        Some(Sampler::new(&state, circuit))
    } else {
        None
    };
    let mut done = 0;
    while done < shots {
        if observer.should_stop() {
            return Err(Interrupted);
        }
        let chunk = step.min(shots - done);
        for shot in 0..chunk {
            // Sampling is cheap, a simulated shot is not: look up often enough either way.
            let check_every = if sampler.is_some() { 4096 } else { 1 };
            if shot % check_every == check_every - 1 && observer.should_stop() {
                return Err(Interrupted);
            }
            let bits = match &mut sampler {
                Some(sampler) => sampler.sample(&mut rng),
                None => run_shot(circuit, &mut rng, observer)?,
            };
            *counts.entry(bit_string(bits, circuit.num_clbits)).or_default() += 1;
        }
        done += chunk;
        observer.progress(done, &counts);
    }
    Ok(counts)
}

/// Returns true when no reset or condition occurs and no gate or second measurement touches a
/// qubit after it was measured: then measuring at the end gives the same distribution.
fn measurements_are_terminal(circuit: &Circuit) -> bool {
    let mut measured = vec![false; circuit.num_qubits];
    for instruction in &circuit.instructions {
        if instruction.condition.is_some() {
            return false;
        }
        match instruction.operation {
            Operation::Reset { .. } => return false,
            Operation::U { qubit, .. } => {
                if measured[qubit] {
                    return false;
                }
            }
            Operation::Cx { control, target } => {
                if measured[control] || measured[target] {
                    return false;
                }
            }
            Operation::Measure { qubit, .. } => measured[qubit] = true,
        }
    }
    true
}

/// Runs one shot with collapsing measurements and returns the classical bits.
fn run_shot(circuit: &Circuit, rng: &mut StdRng, observer: &mut dyn Observer) -> Result<u64, Interrupted> {
    let mut state = StateVector::new(circuit.num_qubits);
    let mut bits: u64 = 0;
    // An operation costs one pass over 2^qubits amplitudes: look up after about the same work
    // whatever the width, so a 20-qubit circuit stops (for its budget, a cancel or a shutdown)
    // within an operation or two, and a small one does not pay for the checks.
    let check_every = (CHECK_AMPLITUDES >> circuit.num_qubits.min(CHECK_AMPLITUDES.trailing_zeros() as usize)).max(1);
    for (index, instruction) in circuit.instructions.iter().enumerate() {
        if index % check_every == check_every - 1 && observer.should_stop() {
            return Err(Interrupted);
        }
        if !condition_holds(instruction, bits) {
            continue;
        }
        match instruction.operation {
            Operation::Measure { qubit, clbit } => {
                let outcome = state.measure(qubit, rng);
                bits = (bits & !(1 << clbit)) | (u64::from(outcome) << clbit);
            }
            Operation::Reset { qubit } => {
                if state.measure(qubit, rng) {
                    state.apply(Operation::U {
                        theta: std::f64::consts::PI,
                        phi: 0.0,
                        lambda: std::f64::consts::PI,
                        qubit,
                    });
                }
            }
            operation @ (Operation::U { .. } | Operation::Cx { .. }) => state.apply(operation),
        }
    }
    Ok(bits)
}

fn condition_holds(instruction: &Instruction, bits: u64) -> bool {
    let Some(Condition { offset, width, value }) = instruction.condition else {
        return true;
    };
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    (bits >> offset) & mask == value
}

/// Returns the classical bits as Qiskit prints them: bit 0 rightmost.
fn bit_string(bits: u64, num_clbits: usize) -> String {
    (0..num_clbits).rev().map(|bit| if (bits >> bit) & 1 == 1 { '1' } else { '0' }).collect()
}

/// Samples terminal measurements from a final state.
struct Sampler {
    /// Cumulative probabilities of the basis states.
    cumulative: Vec<f64>,
    /// (qubit, clbit) of each measurement, in program order (a later one overwrites).
    measurements: Vec<(usize, usize)>,
}

impl Sampler {
    fn new(state: &StateVector, circuit: &Circuit) -> Self {
        let mut total = 0.0;
        let cumulative = state
            .amplitudes
            .iter()
            .map(|amplitude| {
                total += amplitude.norm_sqr();
                total
            })
            .collect();
        let measurements = circuit
            .instructions
            .iter()
            .filter_map(|instruction| match instruction.operation {
                Operation::Measure { qubit, clbit } => Some((qubit, clbit)),
                _ => None,
            })
            .collect();
        Self { cumulative, measurements }
    }

    fn sample(&self, rng: &mut StdRng) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let draw = rng.random::<f64>() * total;
        let basis = self.cumulative.partition_point(|&p| p <= draw).min(self.cumulative.len() - 1);
        let mut bits = 0u64;
        for &(qubit, clbit) in &self.measurements {
            let outcome = (basis >> qubit) & 1 == 1;
            bits = (bits & !(1 << clbit)) | (u64::from(outcome) << clbit);
        }
        bits
    }
}

/// A complex number.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    const ZERO: Complex = Complex { re: 0.0, im: 0.0 };
    const ONE: Complex = Complex { re: 1.0, im: 0.0 };

    fn polar(magnitude: f64, angle: f64) -> Self {
        Complex { re: magnitude * angle.cos(), im: magnitude * angle.sin() }
    }

    fn mul(self, other: Complex) -> Complex {
        Complex { re: self.re * other.re - self.im * other.im, im: self.re * other.im + self.im * other.re }
    }

    fn add(self, other: Complex) -> Complex {
        Complex { re: self.re + other.re, im: self.im + other.im }
    }

    fn scale(self, factor: f64) -> Complex {
        Complex { re: self.re * factor, im: self.im * factor }
    }

    fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
}

/// The state of `n` qubits: 2^n amplitudes, qubit `q` being bit `q` of the basis index.
#[derive(Debug, Clone)]
struct StateVector {
    amplitudes: Vec<Complex>,
}

impl StateVector {
    fn new(num_qubits: usize) -> Self {
        let mut amplitudes = vec![Complex::ZERO; 1 << num_qubits];
        amplitudes[0] = Complex::ONE;
        Self { amplitudes }
    }

    fn apply(&mut self, operation: Operation) {
        match operation {
            Operation::U { theta, phi, lambda, qubit } => self.apply_u(theta, phi, lambda, qubit),
            Operation::Cx { control, target } => self.apply_cx(control, target),
            Operation::Measure { .. } | Operation::Reset { .. } => {}
        }
    }

    /// Applies `U(θ, φ, λ) = [[cos θ/2, -e^{iλ} sin θ/2], [e^{iφ} sin θ/2, e^{i(φ+λ)} cos θ/2]]`.
    fn apply_u(&mut self, theta: f64, phi: f64, lambda: f64, qubit: usize) {
        let (sin, cos) = (theta / 2.0).sin_cos();
        let m00 = Complex { re: cos, im: 0.0 };
        let m01 = Complex::polar(-sin, lambda);
        let m10 = Complex::polar(sin, phi);
        let m11 = Complex::polar(cos, phi + lambda);
        let bit = 1 << qubit;
        for index in 0..self.amplitudes.len() {
            if index & bit != 0 {
                continue;
            }
            let a0 = self.amplitudes[index];
            let a1 = self.amplitudes[index | bit];
            self.amplitudes[index] = m00.mul(a0).add(m01.mul(a1));
            self.amplitudes[index | bit] = m10.mul(a0).add(m11.mul(a1));
        }
    }

    fn apply_cx(&mut self, control: usize, target: usize) {
        let (control_bit, target_bit) = (1 << control, 1 << target);
        for index in 0..self.amplitudes.len() {
            if index & control_bit != 0 && index & target_bit == 0 {
                self.amplitudes.swap(index, index | target_bit);
            }
        }
    }

    /// Measures `qubit`, collapses the state onto the outcome and returns it.
    fn measure(&mut self, qubit: usize, rng: &mut StdRng) -> bool {
        let bit = 1 << qubit;
        let one: f64 =
            self.amplitudes.iter().enumerate().filter(|(index, _)| index & bit != 0).map(|(_, a)| a.norm_sqr()).sum();
        let outcome = rng.random::<f64>() < one;
        let kept = if outcome { one } else { 1.0 - one };
        let norm = if kept > 0.0 { 1.0 / kept.sqrt() } else { 0.0 };
        for (index, amplitude) in self.amplitudes.iter_mut().enumerate() {
            let is_one = index & bit != 0;
            *amplitude = if is_one == outcome { amplitude.scale(norm) } else { Complex::ZERO };
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::circuit::parse;

    struct Quiet;

    impl Observer for Quiet {
        fn should_stop(&mut self) -> bool {
            false
        }
        fn progress(&mut self, _: u32, _: &Counts) {}
    }

    fn counts(source: &str, shots: u32, seed: u64) -> Counts {
        let circuit = parse(source).unwrap();
        run(&circuit, shots, seed, 4, &mut Quiet).unwrap()
    }

    const HEADER: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\n";

    #[test]
    fn bell_pair_is_half_00_half_11() {
        let source = format!("{HEADER}qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;");
        let counts = counts(&source, 10_000, 7);
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["00", "11"]);
        let zeros = f64::from(counts["00"]) / 10_000.0;
        assert!((zeros - 0.5).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn ghz_gives_only_all_zeros_or_all_ones() {
        let source = format!("{HEADER}qreg q[3]; creg c[3]; h q[0]; cx q[0],q[1]; cx q[1],q[2]; measure q -> c;");
        let counts = counts(&source, 4000, 11);
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["000", "111"]);
        assert_eq!(counts.values().sum::<u32>(), 4000);
        assert!(counts.values().all(|&n| n > 1700), "{counts:?}");
    }

    #[test]
    fn x_gate_is_deterministic() {
        let source = format!("{HEADER}qreg q[1]; creg c[1]; x q[0]; measure q[0] -> c[0];");
        assert_eq!(counts(&source, 1000, 1), Counts::from([("1".to_owned(), 1000)]));
    }

    #[test]
    fn classical_bit_zero_is_rightmost_and_only_measured_qubits_count() {
        // q[0] flipped and measured into c[0]; q[1] flipped but never measured; c[2] stays 0.
        let source = format!("{HEADER}qreg q[3]; creg c[3]; x q[0]; x q[1]; measure q[0] -> c[0];");
        assert_eq!(counts(&source, 100, 3), Counts::from([("001".to_owned(), 100)]));
        // Measuring q[0] into c[2] puts the 1 leftmost.
        let swapped = format!("{HEADER}qreg q[3]; creg c[3]; x q[0]; measure q[0] -> c[2];");
        assert_eq!(counts(&swapped, 100, 3), Counts::from([("100".to_owned(), 100)]));
    }

    #[test]
    fn the_seed_fixes_the_counts() {
        let source = format!("{HEADER}qreg q[2]; creg c[2]; h q; measure q -> c;");
        assert_eq!(counts(&source, 500, 42), counts(&source, 500, 42));
        assert_ne!(counts(&source, 500, 42), counts(&source, 500, 43));
    }

    #[test]
    fn mid_circuit_measurement_reset_and_conditions() {
        // Measure a superposition, then flip q[1] only when c[0] read 1: c[1] always equals c[0].
        let source = format!(
            "{HEADER}qreg q[2]; creg c[2]; h q[0]; measure q[0] -> c[0]; if (c==1) x q[1]; measure q[1] -> c[1];"
        );
        let counts = counts(&source, 2000, 5);
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["00", "11"]);
        // Reset brings a flipped qubit back to 0.
        let reset = format!("{HEADER}qreg q[1]; creg c[1]; x q[0]; reset q[0]; measure q[0] -> c[0];");
        assert_eq!(super::tests::counts(&reset, 50, 5), Counts::from([("0".to_owned(), 50)]));
    }

    #[test]
    fn progress_is_reported_in_steps_and_stop_interrupts() {
        struct Recorder(Vec<u32>, bool);
        impl Observer for Recorder {
            fn should_stop(&mut self) -> bool {
                self.1
            }
            fn progress(&mut self, shots_done: u32, _: &Counts) {
                self.0.push(shots_done);
            }
        }
        let circuit = parse(&format!("{HEADER}qreg q[1]; creg c[1]; h q[0]; measure q[0] -> c[0];")).unwrap();
        let mut recorder = Recorder(Vec::new(), false);
        run(&circuit, 10, 1, 4, &mut recorder).unwrap();
        assert_eq!(recorder.0, [3, 6, 9, 10]);
        let mut stopped = Recorder(Vec::new(), true);
        assert_eq!(run(&circuit, 10, 1, 4, &mut stopped), Err(Interrupted));
    }
}
