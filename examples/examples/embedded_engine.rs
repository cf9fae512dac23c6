//! `cargo run -p caracal-examples --example embedded_engine`: see [`caracal_examples::embedded_engine`].

#[tokio::main]
async fn main() -> Result<(), caracal_examples::ExampleError> {
    let report = caracal_examples::embedded_engine::run().await?;
    println!("{report:#?}");
    Ok(())
}
