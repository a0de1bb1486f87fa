//! The naive twins: plain loops with f64 accumulation, written for readability. They are the
//! executable specification every fast kernel is tested against, and take the same arguments
//! as their fast counterparts so tests can pass either as a function value.

mod activation;
mod attention;
mod matmul;
mod norm;

pub use activation::{gelu_erf, gelu_tanh, softmax};
pub use attention::{attention, attention_probabilities};
pub use matmul::matmul;
pub use norm::add_norm;
