//! Tools shared by the `tool_*` integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use voxloop_core::tool::Tool;

/// A four-function calculator that counts its calls.
#[derive(Debug, Default, Clone)]
pub struct Calculator {
    pub calls: Arc<AtomicUsize>,
}

impl Calculator {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Arguments of the calculator.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CalcArgs {
    /// The left operand.
    pub a: f64,
    /// The right operand.
    pub b: f64,
    /// The operation to apply.
    pub op: Op,
    /// Digits after the decimal point in the text answer (default 2).
    #[serde(default)]
    pub precision: Option<u8>,
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// The calculator's answer.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub value: f64,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CalcError {
    #[error("division by zero")]
    DivisionByZero,
}

#[async_trait::async_trait]
impl Tool for Calculator {
    const NAME: &'static str = "calculator";
    type Args = CalcArgs;
    type Output = Answer;
    type Error = CalcError;

    fn description(&self) -> String {
        "Computes a + b, a - b, a * b or a / b.".to_owned()
    }

    async fn call(&self, args: CalcArgs) -> Result<Answer, CalcError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let value = match args.op {
            Op::Add => args.a + args.b,
            Op::Subtract => args.a - args.b,
            Op::Multiply => args.a * args.b,
            Op::Divide if args.b == 0.0 => return Err(CalcError::DivisionByZero),
            Op::Divide => args.a / args.b,
        };
        let digits = usize::from(args.precision.unwrap_or(2));
        Ok(Answer { value, text: format!("{value:.digits$}") })
    }
}
