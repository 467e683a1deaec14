//! Parsing of untrusted request input into typed values: the URL split and source
//! (`url`), signatures (`signature`) and the processing-option grammar (`options`).

pub mod options;
pub mod signature;
pub mod url;
