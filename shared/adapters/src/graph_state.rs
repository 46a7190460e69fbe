//! Microsoft Graph subscription state (being written).
