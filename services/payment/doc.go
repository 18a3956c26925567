// Package payment is the root of the payment service module, which implements
// meshmart.payment.v1.PaymentService: idempotent charges and refunds through a payment processor,
// and a stream of payment events. Its entry point is cmd/payment; the domain, transport and
// storage layers live under internal/.
package payment
