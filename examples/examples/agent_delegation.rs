//! `cargo run -p caracal-examples --example agent_delegation`: see [`caracal_examples::agent_delegation`].

#[tokio::main]
async fn main() -> Result<(), caracal_examples::ExampleError> {
    let report = caracal_examples::agent_delegation::run().await?;
    println!("{report:#?}");
    Ok(())
}
