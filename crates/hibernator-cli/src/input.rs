//! Reading manifests: files, directories (recursively) and standard input, each possibly
//! holding several YAML or JSON documents (`kubectl kustomize` output, `kind: List`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hibernator_api::validate::Document;
use serde_json::Value;

/// A file that could not be parsed.
#[derive(Debug, Clone)]
pub struct ParseFailure {
    /// The file.
    pub source: String,
    /// The parser's message (with line and column).
    pub message: String,
}

/// Every document found, plus the files that could not be parsed.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Parsed documents, in input order.
    pub documents: Vec<Document>,
    /// Files that are not valid YAML.
    pub failures: Vec<ParseFailure>,
}

/// Reads `paths` (`-` = standard input). Unreadable paths are errors; unparsable files are
/// collected as failures.
pub fn read(paths: &[String]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    let paths: Vec<String> = if paths.is_empty() {
        vec!["-".into()]
    } else {
        paths.to_vec()
    };
    for p in &paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("failed to read standard input")?;
            parse_into("<stdin>", &text, &mut inputs);
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut files = Vec::new();
            collect(path, &mut files)?;
            if files.is_empty() {
                bail!("{} holds no .yaml, .yml or .json file", path.display());
            }
            for f in files {
                read_file(&f, &mut inputs)?;
            }
        } else {
            read_file(path, &mut inputs)?;
        }
    }
    Ok(inputs)
}

fn read_file(path: &Path, inputs: &mut Inputs) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    parse_into(&path.display().to_string(), &text, inputs);
    Ok(())
}

/// Files below `dir` with a manifest extension, sorted for a stable order.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to read directory {}", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses a stream of documents; `kind: List` items become documents of their own.
pub fn parse_into(source: &str, text: &str, inputs: &mut Inputs) {
    let docs: Vec<Value> = match serde_saphyr::from_multiple::<Value>(text) {
        Ok(d) => d,
        Err(e) => {
            inputs.failures.push(ParseFailure {
                source: source.to_string(),
                message: e.to_string(),
            });
            return;
        }
    };
    let mut expanded = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = m.get("items") {
                    expanded.extend(items.iter().cloned());
                }
            }
            other => expanded.push(other),
        }
    }
    let many = expanded.len() > 1;
    for (i, value) in expanded.into_iter().enumerate() {
        inputs.documents.push(Document {
            source: if many {
                format!("{source}#{}", i + 1)
            } else {
                source.to_string()
            },
            value,
        });
    }
}
