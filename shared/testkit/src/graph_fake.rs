//! A stateful fake of Microsoft Graph (being written).
