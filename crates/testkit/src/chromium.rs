//! Headless Chromium driven over the DevTools protocol (being written).
