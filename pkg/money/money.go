// Package money checks currency codes against ISO 4217, for every service that takes a price or
// an amount from a client (the order service's catalog and orders, the payment service's charges
// and refunds).
package money

import (
	"golang.org/x/text/currency"

	"github.com/meshmart/meshmart/pkg/fault"
)

// current holds the alphabetic ISO 4217 codes of the currencies that are legal tender somewhere
// today, as golang.org/x/text/currency (CLDR's data) knows them. currency.ParseISO alone is not
// enough: it also accepts withdrawn currencies (DEM), the codes for testing and for "no currency"
// (XTS, XXX), precious metals (XAU) and lower case, none of which a shop may charge in.
var current = func() map[string]bool {
	m := map[string]bool{}
	for it := currency.Query(); it.Next(); {
		m[it.Unit().String()] = true
	}
	return m
}()

// IsCurrency reports whether code is the upper-case alphabetic ISO 4217 code of a currency in
// use today, e.g. "USD", "EUR", "JPY".
func IsCurrency(code string) bool { return current[code] }

// CheckCurrency returns nil when code is a currency in use today (IsCurrency), else an
// InvalidArgument fault whose field violation names field.
func CheckCurrency(field, code string) error {
	if IsCurrency(code) {
		return nil
	}
	return fault.Invalid(field, "must be the ISO 4217 code of a currency in use, e.g. USD")
}
