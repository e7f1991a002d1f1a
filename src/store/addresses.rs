//! The resolver's address book, kept so that the grace of a vanished address outlives a
//! restart.

use rusqlite::OptionalExtension;

use super::{Store, StoreError};
use crate::resolve::AddressBook;

impl Store {
    /// The resolver's address book (empty before the first resolution).
    pub fn address_book(&self) -> Result<AddressBook, StoreError> {
        let text: Option<String> = self.conn.query_row("SELECT book FROM address_book WHERE id = 1", [], |r| r.get(0)).optional()?;
        match text {
            None => Ok(AddressBook::default()),
            Some(t) => serde_json::from_str(&t).map_err(|source| StoreError::corrupt("address book (table address_book)", source)),
        }
    }

    /// Replaces the address book.
    pub fn save_address_book(&mut self, book: &AddressBook) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO address_book (id, book) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET book = ?1",
            [serde_json::to_string(book).expect("a book serialises")],
        )?;
        Ok(())
    }
}
