// Money as the contracts carry it (meshmart.money.v1.Money): an ISO 4217 code and an integer of
// minor units, which protojson sends as a string since it is an int64. It is formatted without
// floating point: the digits are placed around the decimal point as text, so 1999 USD is
// exactly "$19.99" and no amount is ever rounded.

// format returns money formatted for the browser's locale, e.g. {currencyCode: 'USD',
// minorUnits: '1999'} as "$19.99"; missing money is "—".
export function format(money) {
  if (!money || !money.currencyCode) return '—';
  const nf = new Intl.NumberFormat(undefined, { style: 'currency', currency: money.currencyCode });
  const digits = nf.resolvedOptions().maximumFractionDigits;
  let units = BigInt(money.minorUnits ?? 0);
  const sign = units < 0n ? '-' : '';
  if (units < 0n) units = -units;
  const text = units.toString().padStart(digits + 1, '0');
  const whole = text.slice(0, text.length - digits);
  const frac = text.slice(text.length - digits);
  // Intl formats decimal strings exactly (Intl.NumberFormat v3).
  return nf.format(digits ? `${sign}${whole}.${frac}` : `${sign}${whole}`);
}
