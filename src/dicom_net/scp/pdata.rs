//! What arrives in P-DATA once an association is up: presentation data values assembled into
//! DIMSE messages (C-ECHO, C-STORE, the Storage Commitment N-ACTION) and what each asks of the
//! driver. The association's states, deadlines and PDUs are in the module above.

use super::*;

impl Scp {
    /// One presentation data value; false when it ended the association.
    pub(super) fn on_pdv(&mut self, v: dicom_ul::pdu::PDataValue) -> bool {
        let Some(ctx) = self
            .contexts
            .iter()
            .find(|c| c.id == v.presentation_context_id)
            .cloned()
        else {
            self.abort(
                AbortRQServiceProviderReason::InvalidPduParameter,
                format!(
                    "data on presentation context {} that was not accepted",
                    v.presentation_context_id
                ),
            );
            return false;
        };
        match v.value_type {
            PDataValueType::Command => {
                if self.pending.is_some() || self.pending_commit.is_some() {
                    self.abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "a command before the previous request's data set ended".into(),
                    );
                    return false;
                }
                if self.command.len() + v.data.len() > dimse::MAX_COMMAND_BYTES {
                    self.abort(
                        AbortRQServiceProviderReason::InvalidPduParameter,
                        "a command set larger than 64 KiB".into(),
                    );
                    return false;
                }
                self.command.extend_from_slice(&v.data);
                if !v.is_last {
                    return true;
                }
                let parsed = dimse::parse_command(&self.command);
                self.command.clear();
                match parsed {
                    Ok(Command::Echo { message_id }) => {
                        let rsp = dimse::response(0x8030, message_id, VERIFICATION, None, status::SUCCESS);
                        self.push_pdu(&dimse::command_pdu(ctx.id, rsp));
                        self.events.push_back(Event::Echo);
                        true
                    }
                    Ok(Command::Store(c)) => {
                        self.data.clear();
                        self.pending = Some((ctx.id, c));
                        true
                    }
                    Ok(Command::Action {
                        message_id,
                        class_uid,
                        action_type,
                        ..
                    }) => {
                        let served = ctx.abstract_syntax == STORAGE_COMMITMENT
                            && class_uid == STORAGE_COMMITMENT
                            && action_type == 1;
                        self.data.clear();
                        self.pending_commit = Some((ctx.id, message_id, action_type, served));
                        true
                    }
                    Ok(Command::EventReportResponse { status }) => {
                        self.events.push_back(Event::CommitReportAnswered { status });
                        true
                    }
                    Err(why) => {
                        self.abort(
                            AbortRQServiceProviderReason::InvalidPduParameter,
                            format!("an unreadable command ({why})"),
                        );
                        false
                    }
                }
            }
            PDataValueType::Data => {
                if let Some((pc, message_id, action_type, served)) = self.pending_commit {
                    return self.on_commit_data(v, &ctx, pc, message_id, action_type, served);
                }
                let Some((pc, cmd)) = self.pending.clone() else {
                    self.abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "a data set without a C-STORE request".into(),
                    );
                    return false;
                };
                if pc != ctx.id {
                    self.abort(
                        AbortRQServiceProviderReason::InvalidPduParameter,
                        "a data set on another presentation context than its request".into(),
                    );
                    return false;
                }
                if self.data.len() + v.data.len() > self.settings.max_instance_bytes {
                    self.abort(
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                        format!(
                            "instance {} larger than the {} MiB limit",
                            cmd.instance_uid,
                            self.settings.max_instance_bytes >> 20
                        ),
                    );
                    return false;
                }
                self.data.extend_from_slice(&v.data);
                if !v.is_last {
                    return true;
                }
                self.pending = None;
                self.state = State::AwaitStore {
                    pc,
                    message_id: cmd.message_id,
                    class_uid: cmd.class_uid.clone(),
                    instance_uid: cmd.instance_uid.clone(),
                };
                self.events.push_back(Event::Store(StoreRequest {
                    command: cmd,
                    transfer_syntax: ctx.transfer_syntax,
                    abstract_syntax: ctx.abstract_syntax,
                    dataset: std::mem::take(&mut self.data),
                }));
                // Nothing more is read until the driver answers (`stored`).
                false
            }
        }
    }

    /// A fragment of an N-ACTION data set; false when the machine now waits or ended.
    fn on_commit_data(
        &mut self,
        v: dicom_ul::pdu::PDataValue,
        ctx: &Context,
        pc: u8,
        message_id: u16,
        action_type: u16,
        served: bool,
    ) -> bool {
        if pc != ctx.id {
            self.abort(
                AbortRQServiceProviderReason::InvalidPduParameter,
                "a data set on another presentation context than its request".into(),
            );
            return false;
        }
        if self.data.len() + v.data.len() > MAX_COMMIT_BYTES {
            self.abort(
                AbortRQServiceProviderReason::ReasonNotSpecified,
                format!("a commitment request larger than {} MiB", MAX_COMMIT_BYTES >> 20),
            );
            return false;
        }
        self.data.extend_from_slice(&v.data);
        if !v.is_last {
            return true;
        }
        self.pending_commit = None;
        let data = std::mem::take(&mut self.data);
        if !served {
            // No such action on this SOP class (0x0123).
            self.push_pdu(&dimse::command_pdu(
                pc,
                dimse::action_response(message_id, action_type, 0x0123),
            ));
            self.events.push_back(Event::CommitRefused {
                reason: format!("N-ACTION type {action_type} outside Storage Commitment"),
            });
            return true;
        }
        match dimse::parse_commitment(&data, &ctx.transfer_syntax) {
            Ok(req) => {
                self.state = State::AwaitCommit {
                    pc,
                    message_id,
                    transaction_uid: req.transaction_uid.clone(),
                    transfer_syntax: ctx.transfer_syntax.clone(),
                };
                self.events.push_back(Event::Commit(req));
                false
            }
            Err(why) => {
                // Processing failure (0x0110): nothing is claimed as committed.
                self.push_pdu(&dimse::command_pdu(pc, dimse::action_response(message_id, 1, 0x0110)));
                self.events.push_back(Event::CommitRefused { reason: why });
                true
            }
        }
    }
}
