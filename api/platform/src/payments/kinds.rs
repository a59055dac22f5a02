//! The closed sets of a payment's recorded words: its kind, funding method, steps,
//! finish status and risk decision. Each is parsed once, when its event is folded in;
//! a word outside its set is a corrupt payment, never a default. The text of each
//! value is what the events hold, so the event bytes do not change.

use std::fmt;

/// Defines an enum of recorded words with `as_str`, `parse` and `Display`.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// `None` for a word outside the set.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// What a payment is.
    PaymentKind {
        Send => "send",
        Request => "request",
        TopUp => "top_up",
        Withdrawal => "withdrawal",
    }
}

words! {
    /// Where the money of a payment comes from.
    Funding {
        Wallet => "wallet",
        BankAccount => "bank_account",
        Card => "card",
        DigitalWallet => "digital_wallet",
    }
}

words! {
    /// A step of a payment's saga. `Review` is the gate a review holds the plan at.
    Step {
        Review => "review",
        Direct => "direct",
        FxDirect => "fx_direct",
        Hold => "hold",
        PostHold => "post_hold",
        VoidHold => "void_hold",
        SettleHold => "settle_hold",
        Authorize => "authorize",
        Capture => "capture",
        VoidAuth => "void_auth",
        Collect => "collect",
        Payout => "payout",
        RailRefund => "rail_refund",
        BookCollect => "book_collect",
        BookPayout => "book_payout",
        BookReverseCollect => "book_reverse_collect",
    }
}

impl Step {
    /// Whether the step is an operation on a payment rail (else it books in the ledger).
    pub fn is_rail(self) -> bool {
        match self {
            Step::Authorize | Step::Capture | Step::VoidAuth | Step::Collect | Step::Payout | Step::RailRefund => true,
            Step::Review
            | Step::Direct
            | Step::FxDirect
            | Step::Hold
            | Step::PostHold
            | Step::VoidHold
            | Step::SettleHold
            | Step::BookCollect
            | Step::BookPayout
            | Step::BookReverseCollect => false,
        }
    }
}

words! {
    /// How a payment's saga ended.
    FinishStatus {
        Completed => "completed",
        Cancelled => "cancelled",
        Failed => "failed",
    }
}

words! {
    /// What the risk rules decided.
    Decision {
        Allow => "allow",
        Review => "review",
        Block => "block",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back_and_others_do_not() {
        for kind in PaymentKind::ALL {
            assert_eq!(PaymentKind::parse(kind.as_str()), Some(*kind));
        }
        for funding in Funding::ALL {
            assert_eq!(Funding::parse(funding.as_str()), Some(*funding));
        }
        for step in Step::ALL {
            assert_eq!(Step::parse(&step.to_string()), Some(*step));
        }
        for status in FinishStatus::ALL {
            assert_eq!(FinishStatus::parse(status.as_str()), Some(*status));
        }
        for decision in Decision::ALL {
            assert_eq!(Decision::parse(decision.as_str()), Some(*decision));
        }
        assert_eq!(Step::parse("refund"), None);
        assert_eq!(PaymentKind::parse(""), None);
        assert_eq!(Funding::parse("Wallet"), None);
    }
}
