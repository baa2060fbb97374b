//! `qtrail-bench`: runs the benchmark scenarios and writes the report; `qtrail-bench serve …`
//! is how the harness runs the servers under test as its own child processes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser as _;
use qtrail_bench::machine::{self, Machine};
use qtrail_bench::report::Report;
use qtrail_bench::scenario::{self, Bench};
use qtrail_bench::serve::{self, Role};

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Benchmarks qtrail: ingest, audit overhead, end-to-end latency, scale, PostgreSQL baseline,
/// alerts, replicas on PostgreSQL.
#[derive(Debug, clap::Parser)]
#[command(name = "qtrail-bench", version)]
struct Cli {
    /// Smaller N and shorter runs (under two minutes).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench-report.json")]
    report: PathBuf,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Where scratch data goes (removed at the end).
    #[arg(long, default_value = "target/bench-scratch")]
    scratch: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Ingest,
    Overhead,
    Latency,
    Scale,
    Postgres,
    Alerts,
    Replicas,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serves one role as a child of the harness (internal).
    #[command(hide = true)]
    Serve {
        role: Role,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Serve { role, args }) = cli.command {
        return serve::serve(role, args).await;
    }
    let started = Instant::now();
    let machine = Machine::detect();
    let commit = machine::commit();
    println!(
        "qtrail-bench{}: {} cores, {}, kernel {}, commit {commit}",
        if cli.quick { " --quick" } else { "" },
        machine.cores,
        machine.cpu,
        machine.kernel
    );
    let report = Report::new(machine, commit, cli.quick);
    let mut bench = Bench::new(cli.quick, report, &cli.scratch)?;
    let wanted = |scenario: Scenario| cli.scenario.is_empty() || cli.scenario.contains(&scenario);

    let mut rates = None;
    if wanted(Scenario::Ingest) {
        println!("# 1. ingest");
        rates = Some(scenario::ingest::run(&mut bench).await.context("ingest scenario")?);
    }
    if wanted(Scenario::Overhead) {
        println!("# 2. audit overhead");
        scenario::overhead::run(&mut bench).await.context("overhead scenario")?;
    }
    if wanted(Scenario::Latency) {
        println!("# 3. end-to-end latency");
        // Fresh servers: no backlog of an earlier scenario still draining.
        let collector = scenario::start_collector(&bench.files("latency-collector")?).await?;
        let runtime = scenario::start_runtime(&bench.files("latency-runtime")?, &collector.url(), false).await?;
        scenario::latency::run(&mut bench, &runtime, &collector).await.context("latency scenario")?;
        runtime.stop().await?;
        collector.stop().await?;
    }
    if wanted(Scenario::Scale) {
        println!("# 4. scale");
        scenario::scale::run(&mut bench).await.context("scale scenario")?;
    }
    if wanted(Scenario::Postgres) {
        println!("# 5. postgresql baseline");
        scenario::postgres::run(&mut bench, rates).await.context("postgres scenario")?;
    }
    if wanted(Scenario::Alerts) {
        println!("# 6. alerts");
        scenario::alerts::run(&mut bench).await.context("alerts scenario")?;
    }
    if wanted(Scenario::Replicas) {
        println!("# 7. replicas on postgresql");
        scenario::replicas::run(&mut bench).await.context("replicas scenario")?;
    }
    bench.report.seconds = started.elapsed().as_secs_f64();
    bench.report.write(&cli.report)?;
    println!("report: {} ({:.0} s)", cli.report.display(), bench.report.seconds);
    Ok(())
}
