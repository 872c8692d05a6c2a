//! HTTP headers passed to SQL as a `jsonb` object, read straight from
//! PostgreSQL's binary jsonb.
//!
//! pgrx's `JsonB` argument prints the value to text and re-parses it with serde;
//! on the webhook hot path that round trip cost more than the HMAC itself.
//! Only string values can carry a signature, so other values are skipped.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The `(name, value)` pairs of a jsonb object whose values are strings;
/// `None` when the jsonb is not an object.
pub struct Headers(pub Option<Vec<(String, String)>>);

impl_sql_translatable!(Headers, arg_only = "jsonb");

impl FromDatum for Headers {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the caller passes a non-null jsonb datum; the detoasted copy and
        // the iterators live in the current memory context, freed with the call.
        unsafe {
            let jsonb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
            let root = &raw mut (*jsonb).root;
            if (*root).header & pg_sys::JB_FOBJECT == 0 {
                return Some(Headers(None));
            }
            let mut pairs = Vec::new();
            let mut key = None;
            let mut it = pg_sys::JsonbIteratorInit(root);
            let mut value = std::mem::MaybeUninit::<pg_sys::JsonbValue>::zeroed().assume_init();
            loop {
                match pg_sys::JsonbIteratorNext(&mut it, &mut value, true) {
                    pg_sys::JsonbIteratorToken::WJB_DONE => break,
                    pg_sys::JsonbIteratorToken::WJB_KEY => key = Some(string(&value)),
                    pg_sys::JsonbIteratorToken::WJB_VALUE => {
                        if let (Some(name), pg_sys::jbvType::jbvString) = (key.take(), value.type_) {
                            pairs.push((name, string(&value)));
                        }
                    }
                    _ => {}
                }
            }
            Some(Headers(Some(pairs)))
        }
    }
}

/// # Safety
/// `value` must be a `jbvString` produced by the jsonb iterator.
unsafe fn string(value: &pg_sys::JsonbValue) -> String {
    unsafe {
        let s = value.val.string;
        let bytes = std::slice::from_raw_parts(s.val.cast::<u8>(), usize::try_from(s.len).unwrap_or(0));
        String::from_utf8_lossy(bytes).into_owned()
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Headers {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}
