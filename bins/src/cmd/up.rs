//! `caracal up`: every service in one process on the embedded default.
//!
//! The services do not exist yet, so for now this prints what `up` will do and starts
//! nothing. It exits 0 so scripts that call it keep working as the services land.

use clap::Args;

use super::CmdError;

/// Arguments of `caracal up`.
#[derive(Debug, Args)]
pub struct UpArgs {}

/// The services `up` will run, with their reference ports.
pub const SERVICES: &[(&str, u16, &str)] = &[
    ("STS", 8080, "token exchange, JWKS, approvals"),
    ("Gateway", 8081, "mandate-verifying reverse proxy"),
    ("Coordinator", 4000, "sessions and delegation"),
    (
        "Admin API",
        3000,
        "zones, applications, resources, policies",
    ),
    ("Audit", 9090, "ingest, search, chain verification"),
];

/// The plan, as printed.
pub fn plan() -> String {
    let mut out = String::from(
        "caracal up is not implemented yet: nothing was started.\n\
         When it lands (a later issue) it will run every service in one process on the \
         embedded in-memory store, in dev mode:\n",
    );
    for (name, port, what) in SERVICES {
        out.push_str(&format!("  {name:<12} 127.0.0.1:{port:<5} {what}\n"));
    }
    out.push_str(
        "and print a bootstrap admin token (CARACAL_BOOTSTRAP_ADMIN_TOKEN, or a generated one).\n\
         For Postgres mode, `caracal migrate` already applies the schema.\n",
    );
    out
}

/// Print the plan.
pub fn run(_args: &UpArgs) -> Result<(), CmdError> {
    print!("{}", plan());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_every_service_and_port_and_says_nothing_started() {
        let plan = plan();
        for port in ["8080", "8081", "4000", "3000", "9090"] {
            assert!(plan.contains(port), "{port}");
        }
        assert!(plan.contains("nothing was started"));
    }
}
