//! `beehive-operator`: `run` the controller, or print the `crd`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "beehive-operator",
    version,
    about = "Kubernetes operator for Beehive installations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller.
    Run(beehive_operator::RunArgs),
    /// Print the objects the operator would apply for the BeehiveClusters in a YAML file
    /// (a dry run without a cluster; generated Secrets are not shown).
    Render {
        /// YAML file with one or more BeehiveCluster documents.
        file: std::path::PathBuf,
        /// Namespace of clusters that have none.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Print the BeehiveCluster CustomResourceDefinition as YAML.
    Crd {
        /// Wrap it as a Helm chart template (installed and upgraded with the chart unless
        /// crds.install=false; kept on uninstall).
        #[arg(long)]
        helm: bool,
        /// Print a Markdown reference of the fields instead.
        #[arg(long, conflicts_with = "helm")]
        markdown: bool,
    },
    /// Check the CustomResourceDefinitions in YAML files the way a Kubernetes API server
    /// does before it accepts them (structural schema, defaults, CEL rules and field paths,
    /// metadata, extensions). Exits non-zero on any finding.
    CheckCrd {
        /// YAML files (multi-document streams, e.g. `helm template` output).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Fail unless this many CRDs were found across the files.
        #[arg(long)]
        expect: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { markdown: true, .. } => {
            print!("{}", beehive_operator::crd::markdown_reference());
            Ok(())
        }
        Command::Crd { helm, .. } => {
            let yaml = beehive_operator::crd::crd_yaml().context("serializing the CRD")?;
            if helm {
                print!("{}", beehive_operator::crd::helm_template(&yaml));
            } else {
                print!("{yaml}");
            }
            Ok(())
        }
        Command::Render { file, namespace } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            print!("{}", beehive_operator::render(&text, &namespace)?);
            Ok(())
        }
        Command::CheckCrd { files, expect } => check_crds(&files, expect),
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(beehive_operator::run(args))
        }
    }
}

fn check_crds(files: &[std::path::PathBuf], expect: Option<usize>) -> anyhow::Result<()> {
    let mut crds = 0;
    let mut findings = 0;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let report = beehive_operator::crd_validation::check_manifests(&text)
            .with_context(|| format!("parsing {}", file.display()))?;
        for finding in &report.findings {
            println!("{}: {finding}", file.display());
        }
        println!(
            "{}: {} CustomResourceDefinition(s), {} finding(s)",
            file.display(),
            report.crds.len(),
            report.findings.len()
        );
        crds += report.crds.len();
        findings += report.findings.len();
    }
    if let Some(expected) = expect {
        anyhow::ensure!(
            crds == expected,
            "expected {expected} CustomResourceDefinition(s), found {crds}"
        );
    }
    anyhow::ensure!(
        findings == 0,
        "{findings} finding(s): a Kubernetes API server would refuse these CRDs"
    );
    Ok(())
}
