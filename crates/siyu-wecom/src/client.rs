//! The WeCom server API client (filled in below).
