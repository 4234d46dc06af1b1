//! LLM decoding with audio-visual tokens.
