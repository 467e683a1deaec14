//! Parsing of untrusted request input into typed values. Today: the processing-option grammar;
//! the URL split, signatures and sources join it with the server.

pub mod options;
