//! `cargo run -p caracal-examples --example axum_protected_api`: see [`caracal_examples::axum_protected_api`].

#[tokio::main]
async fn main() -> Result<(), caracal_examples::ExampleError> {
    let report = caracal_examples::axum_protected_api::run().await?;
    println!("{report:#?}");
    Ok(())
}
